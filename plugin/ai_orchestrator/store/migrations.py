"""The store's schema, as numbered migrations (SQLite ``user_version`` is the number applied)."""

from __future__ import annotations

# Each entry is one schema version (user_version = its position + 1). Never edit a released entry: append.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE workitems (
            seq INTEGER PRIMARY KEY,
            uid TEXT NOT NULL UNIQUE,
            dataset TEXT NOT NULL,
            transaction_uid TEXT,
            cancel_request TEXT,
            state TEXT NOT NULL,
            priority TEXT, priority_rank INTEGER NOT NULL DEFAULT 3,
            label TEXT, worklist_label TEXT,
            start_datetime TEXT, expected_completion TEXT, input_readiness TEXT,
            patient_name TEXT, patient_id TEXT, patient_birth_date TEXT, patient_sex TEXT,
            study_instance_uid TEXT, code_value TEXT, code_scheme TEXT,
            created_at TEXT NOT NULL, modified_at TEXT NOT NULL)""",
        "CREATE INDEX workitems_state ON workitems(state, seq)",
        "CREATE INDEX workitems_claim ON workitems(state, priority_rank, start_datetime, seq)",
        "CREATE INDEX workitems_state_modified ON workitems(state, modified_at)",
        "CREATE INDEX workitems_priority ON workitems(priority)",
        "CREATE INDEX workitems_label ON workitems(label)",
        "CREATE INDEX workitems_worklist_label ON workitems(worklist_label)",
        "CREATE INDEX workitems_start ON workitems(start_datetime)",
        "CREATE INDEX workitems_expected ON workitems(expected_completion)",
        "CREATE INDEX workitems_readiness ON workitems(input_readiness)",
        "CREATE INDEX workitems_patient_name ON workitems(patient_name)",
        "CREATE INDEX workitems_patient_id ON workitems(patient_id)",
        "CREATE INDEX workitems_birth_date ON workitems(patient_birth_date)",
        "CREATE INDEX workitems_patient_sex ON workitems(patient_sex)",
        "CREATE INDEX workitems_study ON workitems(study_instance_uid)",
        "CREATE INDEX workitems_code ON workitems(code_value, code_scheme)",
        """CREATE TABLE workitem_accessions (
            seq INTEGER NOT NULL REFERENCES workitems(seq) ON DELETE CASCADE,
            accession_number TEXT NOT NULL)""",
        "CREATE INDEX workitem_accessions_number ON workitem_accessions(accession_number)",
        "CREATE INDEX workitem_accessions_seq ON workitem_accessions(seq)",
        "CREATE TABLE tombstones (uid TEXT PRIMARY KEY, state TEXT NOT NULL, purged_at TEXT NOT NULL)",
    ),
    (
        """CREATE TABLE intake_events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            kind TEXT NOT NULL,
            resource_id TEXT NOT NULL,
            received_at TEXT NOT NULL)""",
    ),
    (
        # Counts by state kept by triggers: /system and Search by state answer in O(1), whatever the store size.
        "CREATE TABLE state_counts (state TEXT PRIMARY KEY, n INTEGER NOT NULL)",
        "INSERT INTO state_counts SELECT state, COUNT(*) FROM workitems GROUP BY state",
        """CREATE TRIGGER state_counts_insert AFTER INSERT ON workitems BEGIN
            INSERT INTO state_counts VALUES (NEW.state, 1) ON CONFLICT(state) DO UPDATE SET n = n + 1; END""",
        """CREATE TRIGGER state_counts_delete AFTER DELETE ON workitems BEGIN
            UPDATE state_counts SET n = n - 1 WHERE state = OLD.state; END""",
        """CREATE TRIGGER state_counts_update AFTER UPDATE OF state ON workitems WHEN OLD.state <> NEW.state BEGIN
            UPDATE state_counts SET n = n - 1 WHERE state = OLD.state;
            INSERT INTO state_counts VALUES (NEW.state, 1) ON CONFLICT(state) DO UPDATE SET n = n + 1; END""",
    ),
    (
        # Subscriptions (PS3.4 CC.2.3): scope is a workitem UID or a worklist UID (global, filtered).
        """CREATE TABLE subscriptions (
            ae_title TEXT NOT NULL,
            scope TEXT NOT NULL,
            deletion_lock INTEGER NOT NULL DEFAULT 0,
            filter TEXT,
            suspended INTEGER NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL,
            PRIMARY KEY (ae_title, scope))""",
        "CREATE INDEX subscriptions_scope ON subscriptions(scope)",
        # Event reports not yet delivered, per subscriber, in order (bounded per subscriber by the code).
        """CREATE TABLE subscriber_events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            ae_title TEXT NOT NULL,
            uid TEXT NOT NULL,
            report TEXT NOT NULL,
            final INTEGER NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL)""",
        "CREATE INDEX subscriber_events_ae ON subscriber_events(ae_title, id)",
    ),
    (
        # Claiming (the performer's next SCHEDULED, READY item of its algorithms) without reading every
        # SCHEDULED item of algorithms nobody runs here.
        "CREATE INDEX workitems_claim_code ON workitems(state, input_readiness, code_value, code_scheme, "
        "priority_rank, start_datetime, seq)",
    ),
    (
        # An event's report is kept once, not once per subscriber: a hundred subscribers wrote a hundred copies of
        # each report into the WAL inside the change's transaction. A subscriber's row names the report it waits for.
        "CREATE TABLE event_reports (id INTEGER PRIMARY KEY AUTOINCREMENT, report TEXT NOT NULL)",
        "ALTER TABLE subscriber_events ADD COLUMN report_id INTEGER",
        "INSERT INTO event_reports (id, report) SELECT id, report FROM subscriber_events ORDER BY id",
        "UPDATE subscriber_events SET report_id = id",
        "ALTER TABLE subscriber_events DROP COLUMN report",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)
