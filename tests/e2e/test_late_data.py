"""Issue 9 end to end: late data and corrections through the `meterbill` command.

Each test drives one temporary lake through time: raw files are dropped into raw/ between runs
and every run is `meterbill ingest` + `meterbill bill` at a later `--as-of` (the bill flow reads
the events table; metering and alerts are not involved, which keeps the tests fast). Every
amount is worked out by hand in the comments.

The lake: two customers on monthly USD plans anchored 2026-01-01, one meter (`api_calls`, sum),
grace period 48 h — so January is a draft until 2026-02-03T00:00Z and final from then on.

    flat  (customer b): base fee 10.00 + 0.01 per call
    vol   (customer a): platform fee 20.00 + volume tiers: ≤ 100 calls at 0.10, above at 0.05
                        (90 calls = 9.00 but 110 calls = 5.50: the cliff)
"""

from __future__ import annotations

import datetime as dt
import json
import re
from decimal import Decimal

import polars as pl
import pytest

from catalog import Lake
from tests.e2e.conftest import write_lake

pytestmark = pytest.mark.usefixtures("prefect_harness")

CATALOG = {
    "customers.yaml": """
        - {customer_id: a, customer_name: Alpha}
        - {customer_id: b, customer_name: Bravo}
    """,
    "meters.yaml": """
        - {meter_api_name: api_calls, label: API calls, type: sum, unit: calls}
    """,
    "product_items.yaml": """
        - {product_item_id: api, name: API calls, meter_api_name: api_calls}
    """,
    "plans.yaml": """
        - plan_id: flat
          currency: USD
          billing_period: {interval: month, count: 1}
          fees: [{fee_id: base, name: Base fee, amount: "10.00", cadence: recurring}]
          items:
            - {product_item_id: api, price: {model: per_unit, unit_price: "0.01"}}
        - plan_id: vol
          currency: USD
          billing_period: {interval: month, count: 1}
          fees: [{fee_id: platform, name: Platform fee, amount: "20.00", cadence: recurring}]
          items:
            - product_item_id: api
              price:
                model: volume
                tiers:
                  - {up_to: 100, unit_price: "0.10"}
                  - {up_to: null, unit_price: "0.05"}
    """,
    "subscriptions.yaml": """
        - {subscription_id: sa, customer_id: a, plan_id: vol, start: 2026-01-01}
        - {subscription_id: sb, customer_id: b, plan_id: flat, start: 2026-01-01}
    """,
    "settings.yaml": """
        grace_period_hours: 48
    """,
}

JAN = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
FEB = dt.datetime(2026, 2, 1, tzinfo=dt.timezone.utc)
MAR = dt.datetime(2026, 3, 1, tzinfo=dt.timezone.utc)


def ev(customer, uid, when, value, **dims):
    """One raw event (NDJSON record); `when` is an ISO instant in UTC."""
    t = dt.datetime.fromisoformat(when).replace(tzinfo=dt.timezone.utc)
    rec = {"customer_id": customer, "meter_api_name": "api_calls", "meter_value": value,
           "meter_time_in_millis": int(t.timestamp() * 1000), "unique_id": uid}
    if dims:
        rec["dimensions"] = dims
    return rec


def cancel(e):
    """The cancellation of an accepted event: its unique_id and original event time, re-sent with
    the dimension meterbill_cancel = "true"."""
    return {**e, "dimensions": {**e.get("dimensions", {}), "meterbill_cancel": "true"}}


# January: a 60 + 30 = 90 calls, b 100 + 200 + 50 = 350 calls; February: a 30, b 40.
A1 = ev("a", "a1", "2026-01-05T10:00:00", 60)
A2 = ev("a", "a2", "2026-01-15T10:00:00", 30)
A3 = ev("a", "a3", "2026-02-01T06:00:00", 30)
B1 = ev("b", "b1", "2026-01-05T10:00:00", 100)
B2 = ev("b", "b2", "2026-01-10T10:00:00", 200)
B3 = ev("b", "b3", "2026-01-20T10:00:00", 50)
B4 = ev("b", "b4", "2026-02-01T12:00:00", 40)
FIRST_BATCH = [A1, A2, A3, B1, B2, B3, B4]


def drop(lake, name, events):
    """A new raw file lands in the landing zone."""
    (lake / "raw" / f"{name}.ndjson").write_text("".join(json.dumps(e) + "\n" for e in events))


def step(cli, lake, as_of):
    """One scheduled run: ingest whatever landed, then bill as of `as_of`."""
    for verb in ("ingest", "bill"):
        code, out, err = cli(verb, "--lake", lake, "--as-of", as_of)
        assert code == 0, f"{verb} at {as_of}: {err}"


def invoice(lake, customer, period_start):
    rows = Lake(lake).read("invoices").filter(
        (pl.col("customer_id") == customer) & (pl.col("period_start") == period_start))
    assert rows.height == 1, rows
    return rows.row(0, named=True)


def lines(lake, invoice_id, kind=None):
    li = Lake(lake).read("line_items").filter(pl.col("invoice_id") == invoice_id)
    return li if kind is None else li.filter(pl.col("kind") == kind)


def snapshot(lake, customer, period_start):
    """The invoice row and its line rows, exactly as stored."""
    inv = Lake(lake).read("invoices").filter(
        (pl.col("customer_id") == customer) & (pl.col("period_start") == period_start))
    li = Lake(lake).read("line_items").join(inv.select("invoice_id"), on="invoice_id", how="semi")
    return inv, li.sort("line_id")


def amounts(row):
    return {k: row[k] for k in ("usage_amount", "fees_amount", "adjustments_amount", "subtotal",
                                "discount", "credits_applied", "total_due")}


def usd(*values):
    return tuple(Decimal(v) for v in values)


# ---------------------------------------------------------------------------------------------


def test_event_inside_the_grace_period_changes_the_draft_invoice(tmp_path, cli):
    lake = write_lake(tmp_path / "lake", FIRST_BATCH, CATALOG)
    # 2026-02-02 00:00: January has ended but is inside its 48 h grace period → draft
    step(cli, lake, "2026-02-02T00:00:00Z")
    jan = invoice(lake, "b", JAN)
    # b: 350 calls × 0.01 = 3.50 + base fee 10.00 = 13.50
    assert jan["status"] == "draft"
    assert (jan["usage_amount"], jan["total_due"]) == usd("3.50", "13.50")

    # an event of 2026-01-31 23:00 arrives (device offline), still inside the grace period
    drop(lake, "late-in-grace", [ev("b", "b5", "2026-01-31T23:00:00", 150)])
    step(cli, lake, "2026-02-02T12:00:00Z")
    jan = invoice(lake, "b", JAN)
    # the draft is recomputed: 350 + 150 = 500 calls × 0.01 = 5.00 + 10.00 = 15.00
    assert jan["status"] == "draft"
    assert (jan["usage_amount"], jan["fees_amount"], jan["total_due"]) == usd("5.00", "10.00", "15.00")
    assert lines(lake, jan["invoice_id"], "usage")["quantity"].to_list() == [Decimal(500)]
    # nothing was final, so nothing is an adjustment
    assert Lake(lake).read("line_items").filter(pl.col("kind") == "adjustment").height == 0
    # and the period is final once the grace period is over, with the late event in it
    step(cli, lake, "2026-02-03T00:00:00Z")
    jan = invoice(lake, "b", JAN)
    assert (jan["status"], jan["total_due"]) == ("final", Decimal("15.00"))


def test_late_event_after_finalisation_is_an_adjustment_and_the_final_invoice_never_changes(tmp_path, cli):
    lake = write_lake(tmp_path / "lake", FIRST_BATCH, CATALOG)
    step(cli, lake, "2026-02-03T00:00:00Z")   # January final (grace over), February a draft
    before = {c: snapshot(lake, c, JAN) for c in ("a", "b")}
    ja, jb = invoice(lake, "a", JAN), invoice(lake, "b", JAN)
    assert (ja["status"], jb["status"]) == ("final", "final")
    # a: 90 calls, all in tier 1 (≤ 100): 90 × 0.10 = 9.00 + platform 20.00 = 29.00
    assert (ja["usage_amount"], ja["total_due"]) == usd("9.00", "29.00")
    # b: 350 × 0.01 = 3.50 + 10.00 = 13.50
    assert (jb["usage_amount"], jb["total_due"]) == usd("3.50", "13.50")

    # after finalisation, two January events arrive late
    drop(lake, "late-after-final", [
        ev("a", "a4", "2026-01-25T10:00:00", 20),   # a's January becomes 110 calls: over the cliff
        ev("b", "b6", "2026-01-31T10:00:00", 25),   # b's January becomes 375 calls
    ])
    step(cli, lake, "2026-02-04T00:00:00Z")

    # the final January invoices are byte-identical: same invoice row, same line rows
    for c in ("a", "b"):
        inv, li = snapshot(lake, c, JAN)
        assert inv.equals(before[c][0]), c
        assert li.equals(before[c][1]), c

    # a, February (draft): usage 30 calls × 0.10 = 3.00, platform 20.00,
    # adjustment for January: re-priced 110 calls, all at tier 2: 110 × 0.05 = 5.50,
    # minus the 9.00 billed → −3.50 (negative: the volume cliff), for +20 calls
    fa = invoice(lake, "a", FEB)
    adj = lines(lake, fa["invoice_id"], "adjustment").row(0, named=True)
    assert lines(lake, fa["invoice_id"], "adjustment").height == 1
    assert (adj["amount"], adj["quantity"], adj["corrects_period"], adj["product_item_id"]) == (
        Decimal("-3.50"), Decimal(20), JAN, "api")
    # subtotal 3.00 + 20.00 − 3.50 = 19.50 = total due
    assert fa["status"] == "draft"
    assert amounts(fa) == dict(zip(amounts(fa), usd("3.00", "20.00", "-3.50", "19.50", "0", "0", "19.50")))

    # b, February (draft): usage 40 × 0.01 = 0.40, base 10.00,
    # adjustment for January: 375 × 0.01 = 3.75 − 3.50 billed = +0.25 for +25 calls
    fb = invoice(lake, "b", FEB)
    adj = lines(lake, fb["invoice_id"], "adjustment").row(0, named=True)
    assert (adj["amount"], adj["quantity"], adj["corrects_period"]) == (Decimal("0.25"), Decimal(25), JAN)
    # 0.40 + 10.00 + 0.25 = 10.65
    assert amounts(fb) == dict(zip(amounts(fb), usd("0.40", "10.00", "0.25", "10.65", "0", "0", "10.65")))

    # a later run changes nothing about January, and bills the late events once, not twice
    step(cli, lake, "2026-02-05T00:00:00Z")
    for c in ("a", "b"):
        inv, li = snapshot(lake, c, JAN)
        assert inv.equals(before[c][0]) and li.equals(before[c][1]), c
    assert [r["amount"] for r in Lake(lake).read("line_items").filter(pl.col("kind") == "adjustment")
            .sort("customer_id").iter_rows(named=True)] == [Decimal("-3.50"), Decimal("0.25")]


def test_cancellation_after_finalisation_is_a_negative_adjustment(tmp_path, cli):
    lake = write_lake(tmp_path / "lake", FIRST_BATCH, CATALOG)
    step(cli, lake, "2026-02-03T00:00:00Z")   # January final
    before = snapshot(lake, "b", JAN)
    # b's January: 350 calls → 3.50 + 10.00 = 13.50
    assert invoice(lake, "b", JAN)["total_due"] == Decimal("13.50")

    # b2 (200 calls on 2026-01-10) was erroneous: re-sent with meterbill_cancel = "true"
    drop(lake, "cancel-b2", [cancel(B2)])
    step(cli, lake, "2026-02-04T00:00:00Z")

    inv, li = snapshot(lake, "b", JAN)
    assert inv.equals(before[0]) and li.equals(before[1])
    # January re-priced without b2: 150 × 0.01 = 1.50 − 3.50 billed = −2.00, for −200 calls
    fb = invoice(lake, "b", FEB)
    adj = lines(lake, fb["invoice_id"], "adjustment")
    assert adj.height == 1
    a = adj.row(0, named=True)
    assert (a["amount"], a["quantity"], a["corrects_period"]) == (Decimal("-2.00"), Decimal(-200), JAN)
    # February: 0.40 + 10.00 − 2.00 = 8.40
    assert amounts(fb) == dict(zip(amounts(fb), usd("0.40", "10.00", "-2.00", "8.40", "0", "0", "8.40")))
    # the cancel record is accepted (not a duplicate of b2) and b2 no longer counts
    files = Lake(lake).read("ingest_files").filter(pl.col("source_file").str.contains("cancel-b2"))
    assert files.select("rows_read", "accepted", "duplicates", "quarantined").row(0) == (1, 1, 0, 0)
    # a is untouched: no adjustment
    assert lines(lake, invoice(lake, "a", FEB)["invoice_id"], "adjustment").height == 0


def test_a_credit_larger_than_the_next_invoice_never_makes_a_negative_total(tmp_path, cli):
    big = ev("b", "big", "2026-01-07T00:00:00", 2000)
    lake = write_lake(tmp_path / "lake", FIRST_BATCH + [big], CATALOG)
    step(cli, lake, "2026-02-03T00:00:00Z")
    # b's January, final: 350 + 2000 = 2350 calls × 0.01 = 23.50 + 10.00 = 33.50
    assert invoice(lake, "b", JAN)["total_due"] == Decimal("33.50")
    drop(lake, "cancel-big", [cancel(big)])
    step(cli, lake, "2026-02-04T00:00:00Z")
    # January re-priced: 350 × 0.01 = 3.50 − 23.50 billed = −20.00 for −2000 calls. February's
    # subtotal before it is 0.40 + 10.00 = 10.40, so it takes −10.40 (total due 0, never negative)
    # and the other −9.60 waits for the next invoice, reported as adjustment_pending meanwhile
    fb = invoice(lake, "b", FEB)
    assert amounts(fb) == dict(zip(amounts(fb), usd("0.40", "10.00", "-10.40", "0", "0", "0", "0")))
    pending = Lake(lake).read("unbilled_usage").filter(pl.col("reason") == "adjustment_pending")
    assert pending.select("customer_id", "period_start", "quantity").rows() == [("b", JAN, Decimal(-2000))]
    # ... and the reconciliation says so: January is not balanced yet (2350 billed, 350 used)
    rec = Lake(lake).read("reconciliation").filter((pl.col("customer_id") == "b") & (pl.col("period_start") == JAN))
    assert rec.select("usage_quantity", "billed_quantity", "adjusted_quantity").row(0) == (
        Decimal(350), Decimal(2350), Decimal(0))

    step(cli, lake, "2026-03-04T00:00:00Z")   # February final; March open
    # March: base fee 10.00 − the remaining 9.60 = 0.40; the quantity (−2000 calls) is recorded
    # on this last part, so January balances: 2350 billed − 2000 adjusted = 350 used
    mb = invoice(lake, "b", MAR)
    assert amounts(mb) == dict(zip(amounts(mb), usd("0", "10.00", "-9.60", "0.40", "0", "0", "0.40")))
    adj = Lake(lake).read("line_items").filter((pl.col("customer_id") == "b") & (pl.col("kind") == "adjustment"))
    assert sorted(adj.select("period_start", "corrects_period", "quantity", "amount").rows()) == [
        (FEB, JAN, Decimal(0), Decimal("-10.40")), (MAR, JAN, Decimal(-2000), Decimal("-9.60"))]
    assert Lake(lake).read("unbilled_usage").height == 0
    rec = Lake(lake).read("reconciliation")
    assert rec.filter(pl.col("usage_quantity") != pl.col("billed_quantity") + pl.col("adjusted_quantity")).height == 0


def test_reconcile_balances_after_late_events_cancellations_and_cliffs(tmp_path, cli, monkeypatch):
    lake = write_lake(tmp_path / "lake", FIRST_BATCH, CATALOG)
    step(cli, lake, "2026-02-02T00:00:00Z")                       # January draft
    drop(lake, "late-1", [ev("b", "b5", "2026-01-31T23:00:00", 150)])
    step(cli, lake, "2026-02-02T12:00:00Z")                       # still draft: b January 500
    drop(lake, "late-2", [ev("a", "a4", "2026-01-25T10:00:00", 20),
                          ev("b", "b6", "2026-01-31T10:00:00", 25)])
    step(cli, lake, "2026-02-04T00:00:00Z")                       # January final; adjustments on February
    step(cli, lake, "2026-03-04T00:00:00Z")                       # February final (with them); March a draft
    drop(lake, "late-3", [cancel(B2),                             # a January event, cancelled
                          ev("a", "a5", "2026-02-20T10:00:00", 80)])  # a late February event
    step(cli, lake, "2026-03-05T00:00:00Z")

    # b's January has been billed three times: 500 calls (5.00) on its own final invoice,
    # +25 calls (+0.25) on February's (now final), and now the cancellation of b2 on March's:
    # 325 calls × 0.01 = 3.25 − (5.00 + 0.25) = −2.00 for −200 calls
    mb = invoice(lake, "b", MAR)
    adj = lines(lake, mb["invoice_id"], "adjustment").row(0, named=True)
    assert (adj["amount"], adj["quantity"], adj["corrects_period"]) == (Decimal("-2.00"), Decimal(-200), JAN)
    # March: no usage, base 10.00 − 2.00 = 8.00
    assert amounts(mb) == dict(zip(amounts(mb), usd("0", "10.00", "-2.00", "8.00", "0", "0", "8.00")))
    # a's February: 30 calls billed (3.00); now 30 + 80 = 110 → 5.50, over the cliff again:
    # 5.50 − 3.00 = +2.50 for +80 calls on March: 20.00 + 2.50 = 22.50
    ma = invoice(lake, "a", MAR)
    adj = lines(lake, ma["invoice_id"], "adjustment").row(0, named=True)
    assert (adj["amount"], adj["quantity"], adj["corrects_period"]) == (Decimal("2.50"), Decimal(80), FEB)
    assert ma["total_due"] == Decimal("22.50")

    # Every accepted, non-cancelled event is billed exactly once. By hand:
    #   a: 60 + 30 + 20 (January) + 30 + 80 (February)                  = 220 calls
    #   b: 100 + 50 + 150 + 25 (January, b2's 200 cancelled) + 40 (Feb) = 365 calls
    expected = {"a": Decimal(220), "b": Decimal(365)}
    # ... from the events table (cancel records and the events they cancel left out)
    events = Lake(lake).read("events")
    cancelled = events.filter(pl.col("is_cancel")).select("customer_id", "unique_id")
    counted = events.filter(~pl.col("is_cancel")).join(cancelled, on=["customer_id", "unique_id"], how="anti")
    assert dict(counted.group_by("customer_id").agg(pl.col("meter_value").sum()).iter_rows()) == expected
    # ... billed: usage lines of every invoice + adjustment lines, per customer
    li = Lake(lake).read("line_items").filter(pl.col("kind").is_in(["usage", "adjustment"]))
    assert dict(li.group_by("customer_id").agg(pl.col("quantity").sum()).iter_rows()) == expected
    # ... and in the reconciliation table, which balances on every row
    rec = Lake(lake).read("reconciliation")
    assert rec.filter(pl.col("usage_quantity") != pl.col("billed_quantity") + pl.col("adjusted_quantity")).height == 0
    per_customer = rec.group_by("customer_id").agg(
        (pl.col("billed_quantity") + pl.col("adjusted_quantity")).sum().alias("billed"),
        pl.col("usage_quantity").sum().alias("usage"),
        pl.col("events_accepted").sum(), pl.col("events_cancelled").sum())
    assert {r["customer_id"]: (r["billed"], r["usage"], r["events_accepted"], r["events_cancelled"])
            for r in per_customer.iter_rows(named=True)} == {
        "a": (Decimal(220), Decimal(220), 5, 0),   # a1, a2, a4 (January), a3, a5 (February)
        "b": (Decimal(365), Decimal(365), 5, 1),   # b1, b3, b5, b6 (January), b4; one cancel record
    }

    # `meterbill reconcile` prints the same: one row per customer, period and item, all balanced
    monkeypatch.setenv("COLUMNS", "200")
    code, out, err = cli("reconcile", "--lake", lake)
    assert code == 0, err
    cells = [[c.strip() for c in r.split("│")[1:-1]] for r in out.splitlines() if r.startswith("│")]
    header = next(r for r in out.splitlines() if "customer" in r and "adjusted" in r)
    names = [c.strip() for c in re.split("[┃│]", header)[1:-1]]
    rows = [dict(zip(names, r)) for r in cells]
    assert len(rows) == 6, out   # 2 customers × January, February, March
    assert all(r["balanced"] == "yes" for r in rows), out

    def num(text):
        return Decimal(text.replace(",", ""))

    printed = {}
    for r in rows:
        printed[r["customer"]] = printed.get(r["customer"], 0) + num(r["billed"]) + num(r["adjusted"])
        assert num(r["usage"]) == num(r["billed"]) + num(r["adjusted"])
    assert printed == expected


def test_late_usage_of_a_closed_period_with_a_promotion_keeps_the_promotion(tmp_path, cli):
    """SPEC §5.4: the closed period is re-priced with the change, promotions included."""
    catalog = {**CATALOG, "promotions.yaml": """
        - {promotion_id: welcome10, customer_id: b, type: percentage, value: "10", start: 2026-01-01, periods: 1}
        - {promotion_id: capped, customer_id: a, type: percentage, value: "50", start: 2026-01-01, periods: 1,
           max_discount_per_period: "10.00"}
    """}
    lake = write_lake(tmp_path / "lake", FIRST_BATCH, catalog)
    step(cli, lake, "2026-02-03T00:00:00Z")   # January final
    jb, ja = invoice(lake, "b", JAN), invoice(lake, "a", JAN)
    # b: 350 × 0.01 = 3.50 + base 10.00 = 13.50, 10 % off = 1.35 → 12.15
    assert (jb["subtotal"], jb["discount"], jb["total_due"]) == usd("13.50", "1.35", "12.15")
    # a: 90 × 0.10 = 9.00 + platform 20.00 = 29.00, 50 % = 14.50 capped at 10.00 → 19.00
    assert (ja["subtotal"], ja["discount"], ja["total_due"]) == usd("29.00", "10.00", "19.00")

    drop(lake, "late", [ev("b", "b7", "2026-01-30T10:00:00", 130), ev("a", "a6", "2026-01-30T10:00:00", 5)])
    step(cli, lake, "2026-02-04T00:00:00Z")
    # b's January re-priced: 480 × 0.01 = 4.80 + 10.00 = 14.80, 10 % = 1.48: +1.30 and a further 0.13 off
    fb = invoice(lake, "b", FEB)
    adj = lines(lake, fb["invoice_id"], "adjustment").row(0, named=True)
    assert (adj["amount"], adj["quantity"], adj["corrects_period"]) == (Decimal("1.30"), Decimal(130), JAN)
    disc = lines(lake, fb["invoice_id"], "discount").row(0, named=True)
    assert (disc["amount"], disc["promotion_id"], disc["corrects_period"]) == (Decimal("0.13"), "welcome10", JAN)
    # February (the promotion was for one period): 0.40 + 10.00 + 1.30 = 11.70 − 0.13 = 11.57,
    # of which the late usage is 1.30 − 0.13 = 1.17
    assert amounts(fb) == dict(zip(amounts(fb), usd("0.40", "10.00", "1.30", "11.70", "0.13", "0", "11.57")))
    # a's January re-priced: 95 × 0.10 = 9.50 + 20.00 = 29.50, 50 % = 14.75, still capped at 10.00:
    # the cap was used up by the final invoice, so the late 0.50 gets no further discount
    fa = invoice(lake, "a", FEB)
    assert lines(lake, fa["invoice_id"], "adjustment")["amount"].to_list() == [Decimal("0.50")]
    assert lines(lake, fa["invoice_id"], "discount").height == 0
    # a's February: 30 × 0.10 = 3.00 + 20.00 + 0.50 = 23.50
    assert amounts(fa) == dict(zip(amounts(fa), usd("3.00", "20.00", "0.50", "23.50", "0", "0", "23.50")))
