"""The one exception every UPS operation raises on failure."""

from __future__ import annotations

from .constants import Status


class UPSError(Exception):
    """A UPS request failed: HTTP status, DICOM status code and a message naming what failed."""

    def __init__(self, http_status: int, dicom_status: str, message: str) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.dicom_status = dicom_status
        self.message = message

    def __repr__(self) -> str:
        return f"UPSError({self.http_status}, {self.dicom_status!r}, {self.message!r})"


def bad_request(message: str, dicom_status: str = Status.INVALID_ATTRIBUTE_VALUE) -> UPSError:
    return UPSError(400, dicom_status, message)


def conflict(message: str, dicom_status: str) -> UPSError:
    return UPSError(409, dicom_status, message)


def not_found(uid: str) -> UPSError:
    return UPSError(404, Status.NO_SUCH_INSTANCE, f"Workitem {uid} does not exist")


def gone(uid: str) -> UPSError:
    return UPSError(410, Status.NO_SUCH_INSTANCE, f"Workitem {uid} was purged after reaching a final state")
