"""The vectorised `evaluate` gives, row for row and byte for byte, what the one-window-at-a-time
reference (tests/transforms/alerts/reference_evaluate.py) gives, on random values: gaps, windows
of several zones and periods that share a start or an end, windows in progress, values too large
for 128-bit products, already-fired keys."""

import datetime as dt
import importlib
from decimal import Decimal as D

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from catalog.config import Alert
from catalog.schemas import SCHEMAS
from tests.transforms.alerts.reference_evaluate import reference_evaluate

ev = importlib.import_module("transforms.alerts.evaluate")  # the module (the package exports the function)

UTC = dt.timezone.utc
H = dt.timedelta(hours=1)
BASE = dt.datetime(2026, 1, 1, tzinfo=UTC)
SCHEMA = {"customer_id": pl.String, "window_start": SCHEMAS["alerts_fired"]["window_start"],
          "window_end": SCHEMAS["alerts_fired"]["window_end"], "value": pl.Decimal(38, 9), "complete": pl.Boolean}


def chain(start: dt.datetime, lengths: list[dt.timedelta]) -> list[tuple[dt.datetime, dt.datetime]]:
    out = []
    for n in lengths:
        out.append((start, start + n))
        start += n
    return out


CHAINS = [
    chain(BASE, [24 * H] * 8),                                     # UTC days
    chain(BASE + dt.timedelta(minutes=30), [24 * H] * 8),          # a half-hour zone's days
    chain(BASE, [24 * H] * 3 + [23 * H] + [24 * H] * 4),           # shares starts with UTC, one 23-hour day
    chain(BASE + 23 * H, [24 * H] * 6),                            # starts where that short day ends
    chain(BASE, [48 * H, 24 * H, 72 * H, 24 * H]),                 # billing periods
]
VALUES = [D(0), D(1), D(5), D("4.999999999"), D(-3), D(-10), D(-5), D(50), D(100), D(150), D(790), D(1000),
          D("0.000000001"), D("2.4"), D(3), D("12345678901234567890123456789.123456789"),
          D("-99999999999999999999.5"), None]
THRESHOLDS = [D(0), D(1), D(5), D(20), D(50), D(100), D(-3), D("99.5"), D("0.000000001"), D(10**12),
              D("12345678901234567890123")]
CONDITIONS = ["greater_than", "less_than", "change_above", "change_below", "percent_change_above",
              "percent_change_below"]
ZONES = ["UTC", "Asia/Tokyo", "America/New_York", "Asia/Kolkata"]


@st.composite
def cases(draw):
    customers = draw(st.lists(st.sampled_from(["acme", "globex", "*", "ä-co", "zeta"]), min_size=1, max_size=4,
                              unique=True))
    as_of = BASE + H * draw(st.integers(0, 24 * 9))
    rows: dict = {}
    for c in customers:
        for k in draw(st.lists(st.integers(0, len(CHAINS) - 1), min_size=1, max_size=2)):
            windows = CHAINS[k]
            i = draw(st.integers(0, len(windows) - 1))
            j = draw(st.integers(i + 1, len(windows)))
            for s, e in windows[i:j]:
                if draw(st.integers(0, 3)) == 0:
                    continue  # a window without a row
                complete = draw(st.sampled_from([e <= as_of] * 6 + [True, False, None]))
                value = draw(st.one_of(st.sampled_from(VALUES),
                                       st.decimals(min_value=-10**6, max_value=10**6, places=9,
                                                   allow_nan=False, allow_infinity=False)))
                rows.setdefault((c, s), (c, s, e, value, complete))
    values = pl.DataFrame(list(rows.values()), schema=SCHEMA, orient="row")
    scope = draw(st.sampled_from(["per_customer", "per_customer", "all_customers", "customer"]))
    alert = Alert(alert_id="a1", name="n", metric=draw(st.sampled_from(["usage", "spend", "prepaid_balance"])),
                  meter_api_name="m", scope=scope, customer_id=draw(st.sampled_from(customers)),
                  window=draw(st.sampled_from(["hour", "day", "week", "month", "billing_period"])),
                  condition=draw(st.sampled_from(CONDITIONS)),
                  threshold=draw(st.one_of(st.sampled_from(THRESHOLDS),
                                           st.decimals(min_value=-10**4, max_value=10**4, places=9,
                                                       allow_nan=False, allow_infinity=False))))
    zones = {c: draw(st.sampled_from(ZONES)) for c in customers}
    return alert, values.sample(fraction=1, shuffle=True, seed=draw(st.integers(0, 9))), as_of, zones


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases(), fired_seed=st.integers(0, 3))
def test_vectorised_evaluate_equals_the_reference(case, fired_seed):
    alert, values, as_of, zones = case
    try:
        want = reference_evaluate(alert, values, as_of, timezones=zones)
    except ValueError as e:  # windows of one start and two ends summed for all customers
        with pytest.raises(ValueError) as got:
            ev.evaluate(alert, values, as_of, timezones=zones)
        assert str(got.value) == str(e)
        return
    already = None
    if want.height and fired_seed:  # an earlier run fired some of these keys (or another alert did)
        already = want.sample(fraction=0.5, seed=fired_seed)
        if fired_seed == 3:
            already = already.with_columns(pl.lit("another").alias("alert_id"))
        want = reference_evaluate(alert, values, as_of, already, timezones=zones)
    got = ev.evaluate(alert, values, as_of, already, timezones=zones)
    assert_frame_equal(got, want)


def test_evaluate_decides_in_polars_not_row_by_row(monkeypatch):
    """2,000 customers' windows are judged by expressions over the whole frame: `decide` (the
    scalar form of the same conditions) is left for values whose products would not fit 128 bits."""
    alert = Alert(alert_id="drop", name="n", metric="usage", meter_api_name="m", window="day",
                  condition="percent_change_below", threshold=D(20))
    days = CHAINS[0]
    rows = []
    for i in range(2000):
        c = f"cus_{i:05d}"
        rows += [(c, *days[0], D(1000), True), (c, *days[1], D(700 + i % 200), True), (c, *days[2], D(5), False)]
    values = pl.DataFrame(rows, schema=SCHEMA, orient="row")
    as_of = days[2][0] + H
    want = reference_evaluate(alert, values, as_of)
    assert want.height == 1010  # 1000 -> 700..800 is at most -20% (800 exactly): 101 of every 200
    calls = []
    real = ev.decide
    monkeypatch.setattr(ev, "decide", lambda *a: calls.append(a) or real(*a))
    assert_frame_equal(ev.evaluate(alert, values, as_of), want)
    assert calls == []


magnitudes = st.integers(-9, 28).flatmap(
    lambda k: st.decimals(min_value=-(D(10) ** k), max_value=D(10) ** k, places=9,
                          allow_nan=False, allow_infinity=False))


@settings(max_examples=200, deadline=None)
@given(pairs=st.lists(st.tuples(magnitudes, magnitudes), min_size=1, max_size=20),
       condition=st.sampled_from(CONDITIONS),
       threshold=st.one_of(magnitudes, st.sampled_from([D(0), D(20), D(50), D(100), D(-100)])))
def test_the_frame_decisions_are_decide_for_any_magnitude(pairs, condition, threshold):
    """Values of 10^-9 to 10^28 (products past 128 bits go to `decide`): the same firings as
    `decide`, row by row."""
    alert = Alert(alert_id="a", name="n", metric="usage", meter_api_name="m", condition=condition,
                  threshold=threshold)
    judged = pl.DataFrame({"value": [c for c, _ in pairs], "prev": [p for _, p in pairs],
                           "i": list(range(len(pairs)))},
                          schema={"value": pl.Decimal(38, 9), "prev": pl.Decimal(38, 9), "i": pl.Int64})
    got = sorted(ev._firing(alert, judged)["i"].to_list())
    want = [i for i, (c, p) in enumerate(pairs) if ev.decide(condition, threshold, c, p)]
    assert got == want


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.one_of(st.none(), magnitudes), min_size=1, max_size=30))
def test_decimal_text_of_a_column_is_fmt_decimal(values):
    """Messages write a column's values as fmt_decimal writes one: '1000.5', '0', '-0.000000001'."""
    frame = pl.DataFrame({"v": pl.Series(values, dtype=pl.Decimal(38, 9))})
    assert frame.select(ev.fmt_decimals(pl.col("v")))["v"].to_list() == [ev.fmt_decimal(v) for v in values]


def test_decimal_text_keeps_the_zeros_of_whole_numbers():
    frame = pl.DataFrame({"v": pl.Series([D(100), D("1000.500000000"), D(0), D("-10.01"), None], dtype=pl.Decimal(38, 9))})
    assert frame.select(ev.fmt_decimals(pl.col("v")))["v"].to_list() == ["100", "1000.5", "0", "-10.01", ""]
