"""SPEC §2 cancellation: a cancel record removes itself and the event with the same customer,
meter, unique_id and event time."""

from __future__ import annotations

import polars as pl

from catalog.config import Meter
from tests.transforms.metering.support import D, event, events_frame, values, windows_frame
from transforms.metering import apply_cancellations, meter_values

T1, T2 = "2026-01-01T10:00:00Z", "2026-01-01T11:00:00Z"
CANCEL = {"meterbill_cancel": "true"}


def test_a_cancel_record_removes_its_event_and_itself():
    ev = events_frame([
        event(T1, 5, uid="a"),
        event(T1, 7, uid="b"),
        event(T1, 5, CANCEL, uid="a", cancel=True),
    ])
    out = apply_cancellations(ev)
    assert out["unique_id"].to_list() == ["b"]
    assert out.columns == ev.columns


def test_only_an_exact_match_is_cancelled():
    ev = events_frame([
        event(T1, 1, uid="a"),
        event(T2, 2, uid="a", customer="c2"),       # other customer
        event(T1, 4, uid="a", meter="other"),        # other meter
        event(T2, 8, uid="z"),                       # other time (cancel names T1)
        event(T1, 16, uid=None),                     # no unique_id: cannot be named by a cancel
        event(T1, 0, CANCEL, uid="a", cancel=True),
        event(T1, 0, CANCEL, uid="z", cancel=True),
        event(T1, 0, CANCEL, uid=None, cancel=True),
    ])
    out = apply_cancellations(ev)
    assert out["meter_value"].to_list() == [D(2), D(4), D(8), D(16)]


def test_without_is_cancel_column_the_dimension_marks_cancel_records():
    ev = events_frame([event(T1, 5, uid="a"), event(T1, 5, CANCEL, uid="a"), event(T2, 3, uid="b")]).drop("is_cancel")
    assert apply_cancellations(ev)["unique_id"].to_list() == ["b"]


def test_frames_without_cancels_come_back_unchanged_and_order_is_kept():
    ev = events_frame([event(T2, 1, uid="b"), event(T1, 2, uid="a"), event(T1, 3, uid="c")])
    assert apply_cancellations(ev).equals(ev)
    ev2 = pl.concat([ev, events_frame([event(T1, 0, CANCEL, uid="a", cancel=True)])])
    assert apply_cancellations(ev2)["unique_id"].to_list() == ["b", "c"]


def test_meter_values_never_count_cancelled_events():
    ev = events_frame([event(T1, 5, uid="a"), event(T2, 7, uid="b"), event(T1, 5, CANCEL, uid="a", cancel=True)])
    w = windows_frame([("2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z")])
    assert values(meter_values(ev, Meter(meter_api_name="m", type="count"), w)) == [D(1)]
    assert values(meter_values(ev, Meter(meter_api_name="m", type="sum"), w)) == [D(7)]
