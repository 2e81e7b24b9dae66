"""The one clock: DT values are written with their UTC offset, and compared as instants when searched."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from pydicom.valuerep import DT

from ai_orchestrator.ups.clock import format_dt, utc_now
from ai_orchestrator.ups.index import datetime_key
from ai_orchestrator.ups.sample import sample_workitem

AUCKLAND = timezone(timedelta(hours=13))


def test_format_dt_writes_utc_with_its_offset_whatever_the_zone_of_the_moment():
    moment = datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=AUCKLAND)
    text = format_dt(moment)
    assert text == "20240101140405.123456+0000"
    assert DT(text) == moment  # the same instant


def test_format_dt_refuses_a_naive_datetime():
    with pytest.raises(ValueError, match="naive"):
        format_dt(datetime(2024, 1, 2, 3, 4, 5))


def test_utc_now_is_aware_utc():
    assert utc_now().utcoffset() == timedelta(0)


@pytest.mark.parametrize("local", ["20240102030405+1300", "20240101140405+0000", "20240101090405-0500",
                                   "20240101140405"])
def test_search_keys_of_one_instant_in_several_zones_are_equal(local):
    assert datetime_key(local) == datetime_key("20240101140405+0000") == "20240101140405.000000"


def test_upper_bound_without_offset_still_covers_its_whole_day():
    assert datetime_key("20240101", upper=True) == "20240101999999.999999"


def test_a_workitem_scheduled_in_another_zone_is_found_by_its_utc_instant(service):
    uid = service.create(sample_workitem(start="20240102030000+1300")).uid  # 2024-01-01 14:00 UTC
    service.create(sample_workitem(start="20240102030000+0000"))
    found = service.search({"ScheduledProcedureStepStartDateTime": "20240101130000-20240101150000"}).items
    assert [item["00080018"]["Value"][0] for item in found] == [uid]
