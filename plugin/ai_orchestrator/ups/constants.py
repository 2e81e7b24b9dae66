"""Fixed values of the UPS domain: states, SOP classes, status codes and the standard's warning texts."""

from __future__ import annotations

SCHEDULED = "SCHEDULED"
IN_PROGRESS = "IN PROGRESS"
COMPLETED = "COMPLETED"
CANCELED = "CANCELED"
STATES = (SCHEDULED, IN_PROGRESS, COMPLETED, CANCELED)
FINAL_STATES = frozenset({COMPLETED, CANCELED})

PRIORITIES = ("HIGH", "MEDIUM", "LOW")  # best first: the rank is the index
INPUT_READINESS_STATES = ("INCOMPLETE", "UNAVAILABLE", "READY")
READY = "READY"

# The one private coding scheme of this project's own codes (the "99" prefix marks a private scheme, PS3.16 §8.2).
PRIVATE_SCHEME = "99ORTHANCAI"

UPS_PUSH_SOP_CLASS_UID = "1.2.840.10008.5.1.4.34.6.1"
UPS_EVENT_SOP_CLASS_UID = "1.2.840.10008.5.1.4.34.6.4"

# Default discontinuation reason, as dcm4chee fills it when the requester gives none.
DEFAULT_DISCONTINUATION_REASON = ("110513", "DCM", "Discontinued for unspecified reason")


class Status:
    """DICOM status codes (PS3.4 Annex CC) used in error bodies."""

    INVALID_ATTRIBUTE_VALUE = "0106"
    MISSING_ATTRIBUTE = "0120"
    NO_SUCH_INSTANCE = "C307"
    PROCESSING_FAILURE = "0110"
    DUPLICATE_INSTANCE = "0111"
    NOT_ALLOWED_FROM_STATE = "C300"       # final state: no more changes
    TRANSACTION_UID_MISMATCH = "C301"
    ALREADY_IN_PROGRESS = "C302"
    MAY_NOT_BE_SCHEDULED = "C303"
    FINAL_REQUIREMENTS_NOT_MET = "C304"
    CREATED_WRONG_STATE = "C309"
    NOT_YET_IN_PROGRESS = "C310"
    ALREADY_COMPLETED = "C311"
    ALREADY_CANCELED = "B304"
    ALREADY_COMPLETED_WARNING = "B306"


class Warnings:
    """Warning texts from PS3.18 §11 (sent as ``Warning: 299 {service}: {text}``)."""

    CREATED_WITH_MODIFICATIONS = "The Workitem was created with modifications."
    ALREADY_CANCELED = "The UPS is already in the requested state of CANCELED."
    ALREADY_COMPLETED = "The UPS is already in the requested state of COMPLETED."
    TUID_MISSING = "The Transaction UID is missing."
    TUID_INCORRECT = "The Transaction UID is incorrect."
    INCONSISTENT_STATE = "The submitted request is inconsistent with the state of the UPS Instance."
    FUZZY_NOT_SUPPORTED = "The fuzzymatching parameter is not supported. Only literal matching has been performed."

    @staticmethod
    def additional_results(count: int) -> str:
        return f"There are {count} additional results that can be requested"

    @staticmethod
    def limit_capped(cap: int) -> str:
        return f"The limit was reduced to the server maximum of {cap} results per request"
