"""The one clock of the plugin and how it writes DICOM DT values (PS3.5 §6.2, VR DT).

Every moment the plugin writes is an aware datetime in UTC, written with its offset (``+0000``) through pydicom's
``DT``, so a workitem's DateTimes name the same instant whatever the server's time zone.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from pydicom.valuerep import DT

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """Now, as an aware datetime in UTC."""
    return datetime.now(UTC)


def format_dt(moment: datetime) -> str:
    """A DICOM DT in UTC with its offset, e.g. ``20240102030405.123456+0000``.

    A naive ``moment`` is refused: which instant it names depends on the server's time zone."""
    if moment.tzinfo is None:
        raise ValueError(f"naive datetime {moment.isoformat()}: pass an aware datetime (ups.clock.utc_now)")
    return str(DT(moment.astimezone(UTC)))
