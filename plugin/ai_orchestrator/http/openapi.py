"""The OpenAPI 3.1 description of both front doors: Orthanc's ``/ai-orchestrator`` routes and the orchestrator's
own port (the UPS-RS API at its root, and the WebSocket event channel).

Served at ``GET /ai-orchestrator/openapi.json`` and ``GET /openapi.json`` on the own port; a test checks that every
route is described. UPS-RS semantics follow PS3.18 §11 (``shared/UPS-RS.md`` summarises this project's choices).
"""

from __future__ import annotations

from typing import Any

from .. import __version__

JsonObject = dict[str, Any]
DICOM_JSON = "application/dicom+json"

_WARNING = {"description": "`299 {service}: {text}`: the standard's warning texts (PS3.18 §11), several joined "
                           "with `, `", "schema": {"type": "string"}}


def _dicom(description: str) -> JsonObject:
    return {"description": description, "content": {DICOM_JSON: {"schema": {"$ref": "#/components/schemas/Dataset"}}}}


def _dicom_list(description: str) -> JsonObject:
    return {"description": description, "content": {DICOM_JSON: {"schema": {
        "type": "array", "items": {"$ref": "#/components/schemas/Dataset"}}}}}


def _json(description: str, schema: JsonObject | None = None) -> JsonObject:
    return {"description": description, "content": {"application/json": {"schema": schema or {"type": "object"}}}}


def _error(description: str) -> JsonObject:
    return {"description": description, "headers": {"Warning": _WARNING},
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _empty(description: str, **headers: str) -> JsonObject:
    answer: JsonObject = {"description": description, "headers": {"Warning": _WARNING}}
    for name, text in headers.items():
        answer["headers"][name.replace("_", "-")] = {"description": text, "schema": {"type": "string"}}
    return answer


def _body(required: bool = True) -> JsonObject:
    return {"required": required, "content": {DICOM_JSON: {"schema": {
        "oneOf": [{"$ref": "#/components/schemas/Dataset"},
                  {"type": "array", "items": {"$ref": "#/components/schemas/Dataset"}, "minItems": 1,
                   "maxItems": 1}]}}}}


def _query(name: str, description: str) -> JsonObject:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": {"type": "string"}}


def _path(name: str, description: str) -> JsonObject:
    return {"name": name, "in": "path", "required": True, "description": description, "schema": {"type": "string"}}


UID = _path("uid", "Workitem SOP Instance UID (or, for subscriptions, the global worklist "
                   "1.2.840.10008.5.1.4.34.5 or the filtered worklist 1.2.840.10008.5.1.4.34.5.1)")
AE_TITLE = _path("ae_title", "The subscriber's AE title: 1 to 16 printable characters, no backslash")
STUDY = _path("study", "Orthanc's identifier of the study")
_COMMON_ERRORS = {"400": _error("The request fails the UPS rules; the message names what"),
                  "404": _error("No such workitem"), "410": _error("The workitem was purged")}
_MATCH_KEYS = ("ProcedureStepState", "ScheduledProcedureStepPriority", "ProcedureStepLabel", "WorklistLabel",
               "ScheduledProcedureStepStartDateTime", "ExpectedCompletionDateTime", "InputReadinessState",
               "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "SOPInstanceUID",
               "ScheduledWorkitemCodeSequence.CodeValue", "ReferencedRequestSequence.AccessionNumber")


def _workitem_paths() -> JsonObject:
    """The UPS-RS routes, relative to a UPS-RS base URL."""
    tuid = [_query(name, "Transaction UID (own port; on Orthanc's routes put (0008,1195) in the body)")
            for name in ("transaction-uid", "transaction")]
    return {
        "/workitems": {
            "post": {"summary": "Create a workitem (PS3.18 §11.4)", "requestBody": _body(),
                     "parameters": [_query("workitem", "The chosen workitem UID (own port)"),
                                    _query("AffectedSOPInstanceUID", "The chosen workitem UID (own port)")],
                     "responses": {"201": _empty("Created", Location="The workitem's URL"),
                                   "400": _error("The dataset fails the N-CREATE requirements"),
                                   "409": _error("The UID exists")}},
            "get": {"summary": "Search workitems (PS3.18 §11.9)",
                    "parameters": [_query(key, "Match key: a value, `*`/`?` wildcards, a `from-to` range on DA/DT")
                                   for key in _MATCH_KEYS]
                    + [_query("includefield", "Attributes to return, comma separated, or `all`"),
                       _query("fuzzymatching", "`true` or `false` (fuzzy matching is not supported)"),
                       _query("offset", "Results to skip"), _query("limit", "At most this many results (<= 1000)")],
                    "responses": {"200": _dicom_list("The matches (`[]` when none)"),
                                  "400": _error("A key is unknown, unsupported or malformed")}}},
        "/workitems/{uid}": {
            "parameters": [UID],
            "get": {"summary": "Retrieve a workitem (PS3.18 §11.5)",
                    "responses": {"200": _dicom_list("The workitem, as a one-element array"),
                                  "404": _COMMON_ERRORS["404"], "410": _COMMON_ERRORS["410"]}},
            "post": {"summary": "Update a workitem (PS3.18 §11.6)", "parameters": tuid, "requestBody": _body(),
                     "responses": {"200": _empty("Updated"), **_COMMON_ERRORS}},
            "put": {"summary": "Update a workitem (as some clients send it)", "parameters": tuid,
                    "requestBody": _body(), "responses": {"200": _empty("Updated"), **_COMMON_ERRORS}}},
        "/workitems/{uid}/state": {
            "parameters": [UID],
            "put": {"summary": "Change the state: claim, complete, cancel (PS3.18 §11.7)", "requestBody": _body(),
                    "responses": {"200": _empty("Changed (or already in that final state: a warning)"),
                                  **_COMMON_ERRORS, "409": _error("Not allowed from the current state")}}},
        "/workitems/{uid}/cancelrequest": {
            "parameters": [UID],
            "post": {"summary": "Request cancellation (PS3.18 §11.8)", "requestBody": _body(required=False),
                     "responses": {"202": _empty("Accepted"), **_COMMON_ERRORS,
                                   "409": _error("The workitem is COMPLETED")}}},
        "/workitems/{uid}/subscribers/{ae_title}": {
            "parameters": [UID, AE_TITLE],
            "post": {"summary": "Subscribe (PS3.18 §11.10)",
                     "parameters": [_query("deletionlock", "`true` or `false`")],
                     "responses": {"201": _empty("Subscribed", Content_Location="The event channel (ws://)"),
                                   **_COMMON_ERRORS}},
            "delete": {"summary": "Unsubscribe (PS3.18 §11.11)",
                       "responses": {"200": _empty("Unsubscribed"), **_COMMON_ERRORS}}},
        "/workitems/{uid}/subscribers/{ae_title}/suspend": {
            "parameters": [UID, AE_TITLE],
            "post": {"summary": "Suspend a worklist subscription (PS3.18 §11.12)",
                     "responses": {"200": _empty("Suspended"), **_COMMON_ERRORS}}},
    }


def _plugin_paths() -> JsonObject:
    return {
        "/system": {"get": {"summary": "Versions, device, workitem counts, recent runs, the model hosts (pid, "
                                       "device, resident memory, restarts, last failure)",
                            "responses": {"200": _json("The plugin's state")}}},
        "/models": {"get": {"summary": "The model registry: the Task Performer's capability statement (AIW-I), "
                                       "each model's timeout and its model hosts",
                            "responses": {"200": _json("One entry per model module", {"type": "array"})}}},
        "/openapi.json": {"get": {"summary": "This description", "responses": {"200": _json("OpenAPI 3.1")}}},
        "/studies/{study}/run": {
            "parameters": [STUDY],
            "post": {"summary": "Schedule a model on a study by hand (HIGH priority)",
                     "requestBody": {"required": True, "content": {"application/json": {"schema": {
                         "type": "object", "required": ["model"], "properties": {"model": {"type": "string"}}}}}},
                     "responses": {"201": _json("The new workitem's UID and URL"),
                                   "400": _error("No model named"), "404": _error("No such model or study"),
                                   "409": _error("The model applies to no series of the study")}}},
        "/studies/{study}/workitems": {
            "parameters": [STUDY],
            "get": {"summary": "The study's workitems, summarised (the Orthanc Explorer panel)",
                    "responses": {"200": _json("Study and workitems"), "404": _error("No such study")}}},
        "/studies/{study}/models": {
            "parameters": [STUDY],
            "get": {"summary": "The models that apply to the study",
                    "responses": {"200": _json("Models and their input series", {"type": "array"}),
                                  "404": _error("No such study")}}},
    }


def description(events_port: int) -> JsonObject:
    """The OpenAPI 3.1 document; its servers name both front doors."""
    channel = {"/ws/subscribers/{ae_title}": {
        "parameters": [AE_TITLE],
        "get": {"summary": "The WebSocket event channel (own port only): one DICOM JSON event report per text frame",
                "responses": {"101": {"description": "Switching protocols"},
                              "400": _error("Not an AE title"), "401": _error("Authentication required")}}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Orthanc AI Orchestrator", "version": __version__,
                 "description": "UPS-RS workitems (DICOM PS3.18 §11, PS3.4 Annex CC) for AI runs in Orthanc."},
        "servers": [{"url": "/ai-orchestrator", "description": "Orthanc's routes (POST/PUT carry no query)"},
                    {"url": f"http://{{host}}:{events_port}", "description": "The orchestrator's own port",
                     "variables": {"host": {"default": "localhost"}}}],
        "paths": {**_workitem_paths(), **_plugin_paths(), **channel},
        "components": {"schemas": {
            "Dataset": {"type": "object", "description": "A DICOM JSON dataset (PS3.18 Annex F)",
                        "propertyNames": {"pattern": "^[0-9A-Fa-f]{8}$"},
                        "additionalProperties": {"type": "object", "required": ["vr"],
                                                 "properties": {"vr": {"type": "string", "pattern": "^[A-Z]{2}$"},
                                                                "Value": {"type": "array"}}}},
            "Error": {"type": "object", "required": ["error"],
                      "properties": {"error": {"type": "string"}, "status": {"type": "string"}}}}},
    }
