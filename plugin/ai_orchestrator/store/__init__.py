"""SQLite persistence: workitems with their search columns and the intake event queue (``workitems``), the
schema (``migrations``), match conditions compiled to SQL (``sql``), and the performer's claim ledger (``claims``).
"""
