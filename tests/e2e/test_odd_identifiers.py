"""Identifiers read from raw files are data, never catalogue names to validate (SPEC §8): events of
undefined meters and customers with quotes, semicolons and unicode in their names are accepted and
reported, and everyone else is billed, through `meterbill run`."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import polars as pl
import pytest

from catalog import Lake, connect
from tests.e2e.conftest import CATALOG, MS, write_lake

pytestmark = pytest.mark.usefixtures("prefect_harness")

AS_OF = "2026-02-03T00:00:00Z"  # January final (grace 24 h), February a draft
JAN = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
FEB = dt.datetime(2026, 2, 1, tzinfo=dt.timezone.utc)

OBRIEN = "o'brien; DROP TABLE invoices; --"
UNICODE = "客户-ü \"quoted\""
SQL_METER = "api; DROP TABLE events"
ODD_METER = "ラベル 'x' \"y\""
LONG_METER = "m" * 60 + ";"
GHOST = "x'); DELETE FROM invoices; --"

ODD_CATALOG = {
    **CATALOG,
    "customers.yaml": f"""
        - {{customer_id: c1, customer_name: One Corp}}
        - {{customer_id: "o'brien; DROP TABLE invoices; --", customer_name: O'Brien}}
        - {{customer_id: '客户-ü "quoted"', customer_name: Unicode Ltd}}
    """,
    "subscriptions.yaml": """
        - {subscription_id: s1, customer_id: c1, plan_id: basic, start: 2026-01-01}
        - {subscription_id: s2, customer_id: "o'brien; DROP TABLE invoices; --", plan_id: basic, start: 2026-01-01}
        - {subscription_id: s3, customer_id: '客户-ü "quoted"', plan_id: pro, start: 2026-01-01}
    """,
}


def event(customer, meter, value, uid, when=MS["2026-01-05"]):
    return {"customer_id": customer, "meter_api_name": meter, "meter_value": value,
            "meter_time_in_millis": when, "unique_id": uid}


EVENTS = [
    event("c1", "api_calls", 100, "e1"),
    event(OBRIEN, "api_calls", 200, "e2"),
    event(UNICODE, "api_calls", 150, "e3"),
    # undefined meters with names no catalogue would accept
    event("c1", SQL_METER, 5, "u1"),
    event(OBRIEN, ODD_METER, 2, "u2"),
    event(UNICODE, LONG_METER, 3, "u3", MS["2026-02-02"]),
    # an undefined customer with an SQL-ish id
    event(GHOST, "api_calls", 7, "u4"),
]


def test_odd_meter_names_and_customer_ids_are_reported_and_everyone_else_is_billed(tmp_path, cli):
    lake = write_lake(tmp_path / "lake", EVENTS, ODD_CATALOG)
    code, out, err = cli("run", "--lake", lake, "--as-of", AS_OF, "--no-deliver")
    assert code == 0, err
    assert "ValidationError" not in out + err and "Traceback" not in out + err
    lk = Lake(lake)
    # every raw record accepted
    files = lk.read("ingest_files").row(0, named=True)
    assert (files["rows_read"], files["accepted"], files["quarantined"]) == (7, 7, 0)

    inv = {(r["customer_id"], r["period_start"]): r for r in lk.read("invoices").iter_rows(named=True)}
    assert set(inv) == {(c, p) for c in ("c1", OBRIEN, UNICODE) for p in (JAN, FEB)}
    due = {k: (v["status"], v["usage_amount"], v["total_due"]) for k, v in inv.items()}
    # c1, basic: 100 calls × 0.01 = 1.00 + base 10.00; its undefined meter is not billed
    assert due[("c1", JAN)] == ("final", Decimal("1.00"), Decimal("11.00"))
    # o'brien, basic: 200 × 0.01 = 2.00 + 10.00
    assert due[(OBRIEN, JAN)] == ("final", Decimal("2.00"), Decimal("12.00"))
    # unicode, pro: 150 calls: tier 1 (≤ 100) flat 5.00, 50 × 0.02 = 1.00 → 6.00
    assert due[(UNICODE, JAN)] == ("final", Decimal("6.00"), Decimal("6.00"))
    # February drafts: base fee 10.00; pro with no calls: tier 1's flat 5.00
    assert due[("c1", FEB)] == due[(OBRIEN, FEB)] == ("draft", Decimal("0.00"), Decimal("10.00"))
    assert due[(UNICODE, FEB)] == ("draft", Decimal("5.00"), Decimal("5.00"))

    unbilled = lk.read("unbilled_usage").select("customer_id", "meter_api_name", "period_start", "quantity", "reason")
    assert sorted(unbilled.rows()) == sorted([
        ("c1", SQL_METER, JAN, Decimal(5), "undefined_meter"),
        (OBRIEN, ODD_METER, JAN, Decimal(2), "undefined_meter"),
        (UNICODE, LONG_METER, FEB, Decimal(3), "undefined_meter"),
        (GHOST, "api_calls", JAN, Decimal(7), "undefined_customer"),
    ])
    # the names are stored as data, and queries over them work
    con = connect(lake)
    assert con.execute("SELECT count(*) FROM events WHERE meter_api_name = ?", [SQL_METER]).fetchone()[0] == 1
    assert con.execute("SELECT count(*) FROM invoices").fetchone()[0] == 6


def test_odd_identifiers_do_not_stop_bill_or_alerts_run_on_their_own(tmp_path, cli):
    lake = write_lake(tmp_path / "lake", EVENTS, ODD_CATALOG)
    for verb in ("ingest", "meter", "bill", "alerts"):
        args = [verb, "--lake", lake, "--as-of", AS_OF] + (["--no-deliver"] if verb == "alerts" else [])
        code, out, err = cli(*args)
        assert code == 0, f"{verb}: {err}"
    lk = Lake(lake)
    assert lk.read("invoices").height == 6
    undefined = lk.read("unbilled_usage").filter(pl.col("reason") == "undefined_meter")
    assert sorted(undefined["meter_api_name"].to_list()) == sorted([SQL_METER, ODD_METER, LONG_METER])
