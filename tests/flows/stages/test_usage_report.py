"""flows/stages/usage.py: the usage query over a lake, as table, csv and json (no Prefect needed)."""

from __future__ import annotations

import csv
import io
import json

import polars as pl
import pytest

from catalog import Lake
from flows.stages.common import UsageError
from flows.stages.usage import usage_report
from tests.transforms.metering.support import event, events_frame

CATALOG = {
    "meters.yaml": """
- {meter_api_name: calls, label: Calls, type: sum}
- {meter_api_name: users, type: unique_count, unique_dimensions: [user]}
""",
    "customers.yaml": """
- {customer_id: acme, customer_name: Acme, timezone: Europe/Budapest}
- {customer_id: beta, customer_name: Beta}
""",
}


@pytest.fixture
def lake(tmp_path) -> Lake:
    (tmp_path / "catalog").mkdir()
    for name, text in CATALOG.items():
        (tmp_path / "catalog" / name).write_text(text)
    lk = Lake(tmp_path)
    rows = []
    for bu, vs in (("xxx", [0, 4040, 19605]), ("yyy", [0, 2507, 20101])):
        for i, v in enumerate(vs):
            if v:
                rows.append(event(f"2026-01-0{i + 1}T12:00:00Z", v, {"business_unit": bu}, customer="acme",
                                  meter="calls", uid=f"{bu}{i}"))
    rows.append(event("2026-01-02T12:30:00Z", 99, {"business_unit": "xxx"}, customer="acme", meter="calls", uid="oops"))
    rows.append(event("2026-01-02T12:30:00Z", 0, {"meterbill_cancel": "true"}, customer="acme", meter="calls", uid="oops",
                      cancel=True))
    rows.append(event("2026-01-01T23:30:00Z", 7, {"business_unit": "zzz"}, customer="beta", meter="calls", uid="b1"))
    rows.append(event("2025-12-31T23:30:00Z", 1000, {"business_unit": "zzz"}, customer="acme", meter="calls", uid="a0"))
    df = events_frame(rows).with_columns(pl.col("event_time").dt.date().alias("event_date"))
    lk.write("events", df)
    return lk


def test_json_is_one_object_per_group_and_bucket_with_amberflo_numbers(lake):
    out = json.loads(usage_report(lake, "calls", "day", "2026-01-01", "2026-01-04", ["business_unit"],
                                  {"business_unit": ["xxx", "yyy"]}, None, "json"))
    assert [set(o) for o in out] == [{"business_unit", "window_start", "value", "percent_from_previous", "group_total"}] * 6
    xxx = [o for o in out if o["business_unit"] == "xxx"]
    assert [o["window_start"] for o in xxx] == ["2026-01-01T00:00:00+00:00", "2026-01-02T00:00:00+00:00",
                                                "2026-01-03T00:00:00+00:00"]
    assert [o["value"] for o in xxx] == [0, 4040, 19605]          # the cancelled 99 is not counted
    assert [o["percent_from_previous"] for o in xxx] == [0, 100, 385.2722772277228]
    assert {o["group_total"] for o in xxx} == {23645}
    assert [o["percent_from_previous"] for o in out if o["business_unit"] == "yyy"] == [0, 100, 701.7949740725967]


def test_tz_puts_every_groups_buckets_and_date_bounds_in_that_zone(lake):
    text = usage_report(lake, "calls", "day", "2026-01-01", "2026-01-03", ["customer_id"], {"business_unit": ["zzz"]},
                        None, "csv", tz="Europe/Budapest")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0]) == ["customer_id", "window_start", "value", "percent_from_previous", "group_total"]
    got = [(r["customer_id"], r["window_start"], r["value"]) for r in rows]
    assert got == [
        ("acme", "2026-01-01T00:00:00+01:00", "1000"),   # 2025-12-31T23:30Z is Jan 1 in Budapest
        ("acme", "2026-01-02T00:00:00+01:00", "0"),
        ("beta", "2026-01-01T00:00:00+01:00", "0"),
        ("beta", "2026-01-02T00:00:00+01:00", "7"),      # 2026-01-01T23:30Z is Jan 2 in Budapest (beta is UTC)
    ]
    flat = usage_report(lake, "calls", "day", "2026-01-01", "2026-01-03", [], {"business_unit": ["zzz"]},
                        None, "csv", tz="Europe/Budapest")
    assert _total(flat, False) == _total(text, True) == "1007"
    assert [r["window_start"] for r in csv.DictReader(io.StringIO(flat))] == [
        "2026-01-01T00:00:00+01:00", "2026-01-02T00:00:00+01:00"]
    with pytest.raises(UsageError) as e:
        usage_report(lake, "calls", "day", "2026-01-01", "2026-01-03", [], {}, None, tz="Mars/Olympus")
    assert str(e.value) == "--tz: 'Mars/Olympus' is not an IANA time zone (e.g. UTC, Europe/Budapest)"


def test_usage_help_states_the_day_rule(capsys):
    from flows.cli import main

    assert main(["usage", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "UTC unless --tz names another, with or without --group-by customer_id" in text


def test_table_is_readable_and_top_limits_groups(lake):
    text = usage_report(lake, "calls", "day", "2026-01-01", "2026-01-04", ["business_unit"], {}, 1, "table")
    lines = text.splitlines()
    assert lines[0].split() == ["business_unit", "window_start", "value", "%", "from", "previous", "group", "total"]
    assert [line.split()[0] for line in lines[2:]] == ["xxx"] * 3     # 23645 > 22608 > 7
    assert lines[4].split()[2:] == ["19605", "385.27", "23645"]


def test_bad_arguments_are_one_line_usage_errors(lake):
    with pytest.raises(UsageError) as e:
        usage_report(lake, "x", "day", "2026-01-01", "2026-01-04", [], {}, None)
    assert str(e.value) == "--meter: unknown meter 'x' (known: calls, users)"
    for args, msg in [
        (("calls", "year", "2026-01-01", "2026-01-04"), "--window: 'year' is not one of hour, day, week, month"),
        (("calls", "day", "2026-01-04", "2026-01-01"), "--to: must be after --from"),
        (("calls", "day", "2026-02-30", "2026-03-01"), "--from: '2026-02-30' is not a valid date (e.g. 2026-01-01)"),
    ]:
        with pytest.raises(UsageError) as e:
            usage_report(lake, *args, [], {}, None)
        assert str(e.value) == msg and "\n" not in str(e.value)


def _total(text: str, by_customer: bool) -> str:
    """The range's total from csv output: the one group_total, or the customers' group totals added."""
    rows = list(csv.DictReader(io.StringIO(text)))
    if not by_customer:
        return {r["group_total"] for r in rows}.pop()
    per = {r["customer_id"]: int(r["group_total"]) for r in rows}
    return str(sum(per.values()))


def test_usage_totals_agree_with_and_without_group_by_customer_id(lake):
    """One day rule: UTC days unless --tz says otherwise, with or without grouping by customer."""
    args = ("calls", "day", "2026-01-01", "2026-01-03")
    flat = usage_report(lake, *args, [], {"business_unit": ["zzz"]}, None, "csv")
    grouped = usage_report(lake, *args, ["customer_id"], {"business_unit": ["zzz"]}, None, "csv")
    # UTC days Jan 1 and 2: beta's 7 (Jan 1 23:30Z); acme's 1000 at Dec 31 23:30Z is outside
    assert _total(flat, False) == _total(grouped, True) == "7"
    rows = list(csv.DictReader(io.StringIO(grouped)))
    assert {r["window_start"] for r in rows} == {"2026-01-01T00:00:00+00:00", "2026-01-02T00:00:00+00:00"}
    # every bucket agrees too: the grouped buckets add up to the ungrouped ones
    flat_rows = list(csv.DictReader(io.StringIO(flat)))
    for r in flat_rows:
        assert int(r["value"]) == sum(int(g["value"]) for g in rows if g["window_start"] == r["window_start"])
