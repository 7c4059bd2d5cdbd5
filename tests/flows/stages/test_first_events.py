"""The first event of a customer (SPEC §5.2: the default plan starts at the start of that event's
day) is one rule, used alike by bill, backfill and alerts: the customer's first counting event
before `as_of` — neither a cancel record nor an event a cancel record cancels."""

from __future__ import annotations

import datetime as dt
import json
import textwrap

import pytest

from catalog import Lake, load_catalog

UTC = dt.timezone.utc
INGEST_AS_OF = dt.datetime(2026, 2, 10, tzinfo=UTC)

CATALOG = {
    "settings.yaml": "default_plan_id: basic\ngrace_period_hours: 24\n",
    "customers.yaml": """
        - {customer_id: c1, customer_name: One}
        - {customer_id: c2, customer_name: Two}
        - {customer_id: c3, customer_name: Three}
    """,
    "meters.yaml": "- {meter_api_name: calls, type: sum}\n",
    "product_items.yaml": "- {product_item_id: api, name: API calls, meter_api_name: calls}\n",
    "plans.yaml": """
        - plan_id: basic
          currency: USD
          billing_period: {interval: month, count: 1}
          items:
            - {product_item_id: api, price: {model: per_unit, unit_price: "0.01"}}
    """,
    "alerts.yaml": """
        - alert_id: period-calls
          name: Over 1000 calls in a billing period
          metric: usage
          meter_api_name: calls
          scope: per_customer
          window: billing_period
          condition: greater_than
          threshold: 1000
    """,
}


def ms(iso: str) -> int:
    return int(dt.datetime.fromisoformat(iso).replace(tzinfo=UTC).timestamp() * 1000)


def ev(cid: str, iso: str, value: int, uid: str, cancel: bool = False) -> dict:
    rec = {"customer_id": cid, "meter_api_name": "calls", "meter_value": value, "meter_time_in_millis": ms(iso),
           "unique_id": uid}
    if cancel:
        rec["dimensions"] = {"meterbill_cancel": "true"}
    return rec


EVENTS = [
    # c1: the earliest event (Jan 3) is cancelled by a record of its own four values; the first
    # counting event is Jan 5 10:00
    ev("c1", "2026-01-03T08:00:00", 500, "a"),
    ev("c1", "2026-01-03T08:00:00", 500, "a", cancel=True),
    ev("c1", "2026-01-05T10:00:00", 40, "b"),
    ev("c1", "2026-01-20T12:00:00", 60, "c"),
    # c2: one event on Jan 4
    ev("c2", "2026-01-04T23:30:00", 7, "d"),
    # c3: its only event comes after the as_of used below (Jan 10)
    ev("c3", "2026-01-12T00:00:00", 9, "e"),
]


@pytest.fixture(scope="module")
def lake(tmp_path_factory) -> Lake:
    from flows.stages.ingest import run_ingest

    root = tmp_path_factory.mktemp("firsts") / "lake"
    (root / "catalog").mkdir(parents=True)
    for name, text in CATALOG.items():
        (root / "catalog" / name).write_text(textwrap.dedent(text))
    (root / "raw").mkdir()
    (root / "raw" / "events.ndjson").write_text("".join(json.dumps(e) + "\n" for e in EVENTS))
    lk = Lake(root)
    run_ingest(lk, load_catalog(lk.catalog_dir), INGEST_AS_OF)
    return lk


def test_the_first_event_is_the_first_counting_event_before_as_of(lake):
    from flows.stages.firsts import first_event_times

    as_of = dt.datetime(2026, 1, 10, tzinfo=UTC)
    assert first_event_times(lake, as_of) == {
        "c1": dt.datetime(2026, 1, 5, 10, tzinfo=UTC),  # not the cancelled Jan 3 event, nor its cancel record
        "c2": dt.datetime(2026, 1, 4, 23, 30, tzinfo=UTC),
    }  # c3: nothing before as_of
    assert first_event_times(lake, as_of, customers={"c2", "c3"}) == {"c2": dt.datetime(2026, 1, 4, 23, 30, tzinfo=UTC)}
    assert first_event_times(lake, INGEST_AS_OF)["c3"] == dt.datetime(2026, 1, 12, tzinfo=UTC)


def test_bill_starts_the_default_plan_on_the_first_counting_events_day(lake):
    from flows.stages.bill import bill_tables

    cat = load_catalog(lake.catalog_dir)
    for source in ("hourly", "events"):
        inv = bill_tables(lake, cat, INGEST_AS_OF, source=source, cache=False)["invoices"].sort("customer_id")
        assert inv.select("customer_id", "period_start").rows() == [
            ("c1", dt.datetime(2026, 1, 5, tzinfo=UTC)), ("c1", dt.datetime(2026, 2, 5, tzinfo=UTC)),
            ("c2", dt.datetime(2026, 1, 4, tzinfo=UTC)), ("c2", dt.datetime(2026, 2, 4, tzinfo=UTC)),
            ("c3", dt.datetime(2026, 1, 12, tzinfo=UTC)),
        ], source


def test_backfill_closes_the_default_plan_periods_bill_makes(lake):
    """Backfill bills at each period end + grace: the periods of the first counting event (c1's
    Jan 5 → Feb 5 closes on Feb 6), not of a cancelled one (Jan 3 → Feb 3 would close on Feb 4)."""
    from flows.stages.backfill import close_instants

    cat = load_catalog(lake.catalog_dir)
    start, end = dt.datetime(2026, 1, 1, tzinfo=UTC), dt.datetime(2026, 2, 10, tzinfo=UTC)
    assert close_instants(lake, cat, start, end) == [
        dt.datetime(2026, 2, 5, tzinfo=UTC),  # c2: Jan 4 → Feb 4, + 24 h
        dt.datetime(2026, 2, 6, tzinfo=UTC),  # c1: Jan 5 → Feb 5, + 24 h
        end,
    ]


def test_alerts_have_billing_period_windows_for_a_default_plan_customer(lake):
    """c1 and c2 are billed only on the default plan: their billing_period alert windows are those
    periods (the current one in progress at as_of, the last complete one before it)."""
    from flows.stages.alerts import values_all

    cat = load_catalog(lake.catalog_dir)
    vals = values_all(lake, cat, INGEST_AS_OF)["period-calls"]
    got = vals.select("customer_id", "window_start", "window_end", "value", "complete").rows()
    d = lambda m, day: dt.datetime(2026, m, day, tzinfo=UTC)  # noqa: E731
    assert [(c, s, e, int(v), done) for c, s, e, v, done in got] == [
        ("c1", d(1, 5), d(2, 5), 100, True), ("c1", d(2, 5), d(3, 5), 0, False),
        ("c2", d(1, 4), d(2, 4), 7, True), ("c2", d(2, 4), d(3, 4), 0, False),
        ("c3", d(1, 12), d(2, 12), 9, False),
    ]
