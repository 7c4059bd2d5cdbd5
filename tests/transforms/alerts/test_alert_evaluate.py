"""Alert conditions (SPEC §6): the worked cases of shared/cases/alerts.json and every boundary."""

import datetime as dt
from decimal import Decimal as D

import polars as pl
import pytest

from catalog.config import Alert
from catalog.schemas import SCHEMAS
from transforms.alerts import alert_windows, decide, evaluate
from transforms.shared.percent import percent_change

UTC = dt.timezone.utc


def utc(*a) -> dt.datetime:
    return dt.datetime(*a, tzinfo=UTC)


def make_alert(**kw) -> Alert:
    base = dict(alert_id="a1", name="test", metric="usage", meter_api_name="compute_hours",
                scope="per_customer", window="week", condition="greater_than", threshold=1000)
    base.update(kw)
    return Alert(**base)


def frame(rows: list[tuple]) -> pl.DataFrame:
    """rows: (customer_id, window_start, window_end, value, complete)."""
    return pl.DataFrame(
        [dict(customer_id=c, window_start=s, window_end=e, value=None if v is None else D(str(v)), complete=k)
         for c, s, e, v, k in rows],
        schema={"customer_id": pl.String, "window_start": SCHEMAS["alerts_fired"]["window_start"],
                "window_end": SCHEMAS["alerts_fired"]["window_end"], "value": pl.Decimal(38, 9),
                "complete": pl.Boolean},
    )


W1 = (utc(2025, 12, 29), utc(2026, 1, 5))   # before last
W2 = (utc(2026, 1, 5), utc(2026, 1, 12))    # last complete
W3 = (utc(2026, 1, 12), utc(2026, 1, 19))   # in progress
AS_OF = utc(2026, 1, 14, 9)


# ---------------------------------------------------------------- the worked cases (alerts.json)


def test_case_amberflo_1000_hours_a_week_fires_only_above():
    """amberflo-1000-hours-a-week: week-to-date acme 1000, globex 1000.5 -> only globex."""
    alert = make_alert(condition="greater_than", threshold=1000)
    as_of = utc(2026, 1, 7, 12)
    cur = alert_windows(alert, as_of, "UTC").current
    values = frame([("acme", *cur, 1000, False), ("globex", *cur, "1000.5", False)])
    out = evaluate(alert, values, as_of)
    assert out["customer_id"].to_list() == ["globex"]
    row = out.row(0, named=True)
    assert row["current_value"] == D("1000.5")
    assert row["threshold"] == D(1000)
    assert row["window_start"] == utc(2026, 1, 5) and row["window_end"] == utc(2026, 1, 12)
    assert row["message"] == "globex: compute_hours 1000.5 > 1000 in week of 2026-01-05"
    assert row["fired_at"] == as_of
    assert out.schema == pl.Schema(SCHEMAS["alerts_fired"])


def test_case_amberflo_20_percent_fewer_week_over_week():
    """amberflo-20-percent-fewer: -21, -19, 0, 100 percent -> only acme fires."""
    weeks = {"acme": (1000, 790), "globex": (1000, 810), "initech": (0, 0), "hooli": (0, 50)}
    expected_pct = {"acme": -21, "globex": -19, "initech": 0, "hooli": 100}
    for c, (prev, cur) in weeks.items():
        assert percent_change(D(prev), D(cur)) == expected_pct[c]
    alert = make_alert(condition="percent_change_below", threshold=20)
    rows = []
    for c, (prev, cur) in weeks.items():
        rows += [(c, *W1, prev, True), (c, *W2, cur, True)]
    out = evaluate(alert, frame(rows), AS_OF)
    assert out["customer_id"].to_list() == ["acme"]
    row = out.row(0, named=True)
    assert (row["previous_value"], row["current_value"]) == (D(1000), D(790))
    assert row["window_start"] == W2[0]
    assert "-21%" in row["message"]


def test_case_fire_once_per_window_across_four_runs():
    """fire-once-per-window: month, > 100; runs at Jan 10 (40), Jan 20 (120), Jan 25 (250), Feb 5 (130)."""
    alert = make_alert(window="month", condition="greater_than", threshold=100)
    runs = [("2026-01-10", 40), ("2026-01-20", 120), ("2026-01-25", 250), ("2026-02-05", 130)]
    history = pl.DataFrame(schema=SCHEMAS["alerts_fired"])
    january_total = D(0)
    first_seen: dict[dt.datetime, int] = {}
    for i, (day, month_to_date) in enumerate(runs):
        as_of = dt.datetime.fromisoformat(day).replace(tzinfo=UTC)
        w = alert_windows(alert, as_of, "UTC")
        rows = [("acme", *w.current, month_to_date, False)]
        if w.current[0] == utc(2026, 1, 1):
            january_total = D(month_to_date)
        else:  # January is complete now; its last known total (no events after Jan 25)
            rows.append(("acme", *w.last_complete, january_total, True))
        new = evaluate(alert, frame(rows), as_of, history)
        for start in new["window_start"].to_list():
            assert start not in first_seen, "fired twice for one window"
            first_seen[start] = i
        history = pl.concat([history, new])
    assert first_seen == {utc(2026, 1, 1): 1, utc(2026, 2, 1): 3}
    assert history.height == 2


def test_case_all_customers_sum():
    """all-customers-sum: day, > 500, acme 300 + globex 250 -> fires for '*' at 550."""
    alert = make_alert(scope="all_customers", window="day", threshold=500)
    day = (utc(2026, 1, 14), utc(2026, 1, 15))
    # the caller's sum, as a '*' row
    out = evaluate(alert, frame([("*", *day, 550, False)]), AS_OF)
    assert out.select("customer_id", "current_value").rows() == [("*", D(550))]
    assert out["message"][0].startswith("all customers: compute_hours 550 > 500")
    # per-customer rows are summed
    out = evaluate(alert, frame([("acme", *day, 300, False), ("globex", *day, 250, False)]), AS_OF)
    assert out.select("customer_id", "current_value").rows() == [("*", D(550))]


# ---------------------------------------------------------------- boundaries of every condition

T = D(100)


@pytest.mark.parametrize(
    "condition, prev, cur, fires",
    [
        ("greater_than", None, "100", False),
        ("greater_than", None, "100.000000001", True),
        ("less_than", None, "100", False),
        ("less_than", None, "99.999999999", True),
        ("change_above", "50", "150", True),            # +100 = threshold: >=
        ("change_above", "50", "149.999999999", False),
        ("change_above", "150", "50", False),
        ("change_below", "150", "50", True),            # -100: prev - cur >= threshold
        ("change_below", "150", "50.000000001", False),
        ("change_below", "50", "150", False),
        ("percent_change_above", "50", "100", True),    # +100% = threshold
        ("percent_change_above", "50", "99.999999999", False),
        ("percent_change_above", "0", "0.000000001", True),  # prev = 0 < cur: 100
        ("percent_change_above", "0", "0", False),       # both 0: 0
        ("change_above", None, "500", False),            # no previous window: no comparison
    ],
)
def test_condition_boundaries(condition, prev, cur, fires):
    assert decide(condition, T, D(cur), None if prev is None else D(prev)) is fires


@pytest.mark.parametrize(
    "prev, cur, fires",
    [("1000", "800", True),            # -20% = -threshold: <=
     ("1000", "800.000000001", False),
     ("1000", "790", True),
     ("0", "0", False),
     ("0", "50", False),
     ("3", "2.4", True)],              # exactly -20% with a non-terminating float representation
)
def test_percent_change_below_boundary(prev, cur, fires):
    assert decide("percent_change_below", D(20), D(cur), D(prev)) is fires


def test_percent_change_is_exact_without_division():
    # 1/3 up: 33.333...% is below 33.3333333333333333333333333334 and above 33.33
    assert decide("percent_change_above", D("33.33"), D(4), D(3)) is True
    assert decide("percent_change_above", D("33.3333333333333333333333333334"), D(4), D(3)) is False
    assert percent_change(D(1000), D(790)) == -21
    assert percent_change(D(0), D(-50)) == -100


@pytest.mark.parametrize(
    "condition, threshold, prev, cur, fires",
    [
        ("change_above", 100, 50, 150, True),
        ("change_above", 100, 50, 149, False),
        ("change_below", 100, 150, 50, True),
        ("change_below", 100, 150, 51, False),
        ("percent_change_above", 50, 100, 150, True),
        ("percent_change_above", 50, 100, 149, False),
        ("percent_change_below", 20, 1000, 800, True),
        ("percent_change_below", 20, 1000, 801, False),
    ],
)
def test_change_conditions_compare_last_complete_with_the_one_before(condition, threshold, prev, cur, fires):
    alert = make_alert(condition=condition, threshold=threshold)
    # the window in progress is ignored by change conditions, however large
    values = frame([("acme", *W1, prev, True), ("acme", *W2, cur, True), ("acme", *W3, 10**6, False)])
    out = evaluate(alert, values, AS_OF)
    if fires:
        assert out.select("customer_id", "window_start", "previous_value", "current_value").rows() == [
            ("acme", W2[0], D(prev), D(cur))]
    else:
        assert out.height == 0


def test_greater_than_checks_the_window_in_progress_and_complete_windows():
    alert = make_alert(threshold=100)
    values = frame([("acme", *W2, 101, True), ("acme", *W3, 150, False), ("globex", *W3, 100, False)])
    out = evaluate(alert, values, AS_OF)
    assert out.select("customer_id", "window_start").rows() == [("acme", W2[0]), ("acme", W3[0])]
    assert out.filter(pl.col("window_start") == W3[0])["previous_value"].to_list() == [D(101)]


def test_less_than_only_on_complete_windows():
    alert = make_alert(condition="less_than", threshold=100)
    values = frame([("acme", *W2, 100, True), ("acme", *W3, 5, False),
                    ("globex", *W2, 99, True), ("globex", *W3, 5, False)])
    out = evaluate(alert, values, AS_OF)
    assert out.select("customer_id", "window_start").rows() == [("globex", W2[0])]


def test_future_windows_are_not_evaluated():
    alert = make_alert(threshold=1)
    future = (utc(2026, 1, 19), utc(2026, 1, 26))
    assert evaluate(alert, frame([("acme", *future, 50, False)]), AS_OF).height == 0


def test_a_customer_without_a_row_in_a_computed_window_counts_as_zero():
    """Usage aggregated per customer has no row for a week without events: that week is 0 (§4)."""
    alert = make_alert(condition="percent_change_below", threshold=20)
    values = frame([("acme", *W1, 1000, True),                        # nothing in W2: -100%
                    ("globex", *W1, 500, True), ("globex", *W2, 500, True)])
    out = evaluate(alert, values, AS_OF)
    assert out.select("customer_id", "previous_value", "current_value").rows() == [("acme", D(1000), D(0))]
    # and a customer new in W2 rose from 0 (100%)
    up = make_alert(condition="percent_change_above", threshold=50)
    values = frame([("acme", *W2, 7, True), ("globex", *W1, 500, True), ("globex", *W2, 500, True)])
    assert evaluate(up, values, AS_OF).select("customer_id", "previous_value").rows() == [("acme", D(0))]


def test_without_the_window_before_change_conditions_do_not_fire():
    alert = make_alert(condition="change_above", threshold=1)
    assert evaluate(alert, frame([("acme", *W2, 500, True)]), AS_OF).height == 0


def test_already_fired_is_not_returned_again_and_other_alerts_do_not_block():
    alert = make_alert(threshold=100)
    values = frame([("acme", *W3, 150, False), ("globex", *W3, 150, False)])
    first = evaluate(alert, values, AS_OF)
    assert first.height == 2
    assert evaluate(alert, values, AS_OF + dt.timedelta(hours=1), first).height == 0
    other = first.with_columns(pl.lit("another-alert").alias("alert_id"))
    assert evaluate(alert, values, AS_OF, other).height == 2
    only_acme = first.filter(pl.col("customer_id") == "acme")
    assert evaluate(alert, values, AS_OF, only_acme)["customer_id"].to_list() == ["globex"]


def test_scope_customer_only_looks_at_that_customer():
    alert = make_alert(scope="customer", customer_id="globex", threshold=100)
    values = frame([("acme", *W3, 500, False), ("globex", *W3, 101, False)])
    assert evaluate(alert, values, AS_OF)["customer_id"].to_list() == ["globex"]


def test_all_customers_prefers_the_callers_total_and_sums_otherwise():
    alert = make_alert(scope="all_customers", condition="change_above", threshold=100)
    values = frame([("*", *W1, 200, True), ("acme", *W1, 150, True),  # '*' given for W1: used as is
                    ("acme", *W2, 250, True), ("globex", *W2, 50, True)])  # W2 summed: 300
    out = evaluate(alert, values, AS_OF)
    assert out.select("customer_id", "previous_value", "current_value").rows() == [("*", D(200), D(300))]


def test_per_customer_rejects_two_rows_for_one_window():
    alert = make_alert()
    values = frame([("acme", *W3, 1, False), ("acme", *W3, 2, False)])
    with pytest.raises(ValueError, match="one value per customer and window"):
        evaluate(alert, values, AS_OF)


def test_decimal_exactness_no_float_rounding():
    alert = make_alert(threshold="0.3")
    values = frame([("acme", *W3, "0.300000000", False), ("globex", *W3, "0.300000001", False)])
    assert evaluate(alert, values, AS_OF)["customer_id"].to_list() == ["globex"]


def test_message_uses_the_customers_local_week():
    alert = make_alert(threshold=10)
    cur = alert_windows(alert, AS_OF, "Asia/Tokyo").current
    out = evaluate(alert, frame([("acme", *cur, "12.50", False)]), AS_OF, timezones={"acme": "Asia/Tokyo"})
    assert out["message"][0] == "acme: compute_hours 12.5 > 10 in week of 2026-01-12"
    assert out["window_start"][0] == utc(2026, 1, 11, 15)


def test_empty_values_give_an_empty_frame_of_the_schema():
    out = evaluate(make_alert(), frame([]), AS_OF)
    assert out.height == 0 and out.schema == pl.Schema(SCHEMAS["alerts_fired"])


def test_all_customers_with_no_values_fires_nothing():
    alert = make_alert(scope="all_customers", threshold=0, condition="greater_than")
    assert evaluate(alert, frame([]), AS_OF).height == 0


def test_windows_and_evaluation_in_a_dst_zone():
    """A daily less_than in New York on the 23-hour day of spring forward (2026-03-08)."""
    alert = make_alert(window="day", condition="less_than", threshold=10)
    as_of = utc(2026, 3, 9, 12)
    w = alert_windows(alert, as_of, "America/New_York")
    values = frame([("acme", *w.before_last, 20, True), ("acme", *w.last_complete, "9.5", True),
                    ("acme", *w.current, 0, False)])
    out = evaluate(alert, values, as_of, timezones={"acme": "America/New_York"})
    assert out.select("window_start", "window_end", "previous_value").rows() == [
        (utc(2026, 3, 8, 5), utc(2026, 3, 9, 4), D(20))]
    assert out["message"][0] == "acme: compute_hours 9.5 < 10 in day of 2026-03-08"


# ---------------------------------------------------------------- properties

from fractions import Fraction  # noqa: E402

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

decimals = st.decimals(min_value=-10**12, max_value=10**12, places=9, allow_nan=False, allow_infinity=False)


def _pct(cur: D, prev: D) -> Fraction:
    if prev == 0:
        return Fraction(0 if cur == 0 else (100 if cur > 0 else -100))
    return (Fraction(cur) - Fraction(prev)) * 100 / Fraction(prev)  # §4 as written, prev < 0 too


@settings(max_examples=300, deadline=None)
@given(cur=decimals, prev=decimals, t=st.decimals(min_value=0, max_value=10**6, places=9))
def test_decisions_agree_with_exact_rational_arithmetic(cur, prev, t):
    assert decide("percent_change_above", t, cur, prev) is (_pct(cur, prev) >= Fraction(t))
    assert decide("percent_change_below", t, cur, prev) is (_pct(cur, prev) <= -Fraction(t))
    assert decide("change_above", t, cur, prev) is (Fraction(cur) - Fraction(prev) >= Fraction(t))
    assert decide("change_below", t, cur, prev) is (Fraction(prev) - Fraction(cur) >= Fraction(t))
    assert decide("greater_than", t, cur, None) is (cur > t)
    assert decide("less_than", t, cur, None) is (cur < t)


def test_per_customer_evaluates_a_pre_aggregated_star_series_as_given():
    """e.g. events of undefined customers, counted together by the caller under '*'."""
    alert = make_alert(metric="undefined_customer", meter_api_name=None, threshold=0)
    out = evaluate(alert, frame([("*", *W3, 3, False)]), AS_OF)
    assert out.select("customer_id", "current_value").rows() == [("*", D(3))]
    assert out["message"][0] == "all customers: events of undefined customers 3 > 0 in week of 2026-01-12"


def test_large_values_keep_every_digit_in_messages():
    big = "12345678901234567890123456789.123456789"  # 38 digits, the DECIMAL(38, 9) maximum
    alert = make_alert(condition="percent_change_above", threshold=1)
    out = evaluate(alert, frame([("acme", *W1, "0.000000001", True), ("acme", *W2, big, True)]), AS_OF)
    assert out["current_value"][0] == D(big)
    assert big in out["message"][0]


def test_threshold_conditions_judge_the_last_complete_window_only():
    """§6: earlier complete windows were judged by earlier runs; only greater_than adds the window in progress."""
    quiet = make_alert(condition="less_than", threshold=10)
    values = frame([("acme", *W1, 3, True), ("acme", *W2, 4, True), ("acme", *W3, 1, False),
                    ("globex", *W1, 2, True), ("globex", *W2, 50, True), ("globex", *W3, 1, False)])
    out = evaluate(quiet, values, AS_OF)
    assert out.select("customer_id", "window_start", "current_value", "previous_value").rows() == [
        ("acme", W2[0], D(4), D(3))]  # globex's quiet W1 is not judged again
    busy = make_alert(condition="greater_than", threshold=10)
    values = frame([("acme", *W1, 30, True), ("acme", *W2, 40, True), ("acme", *W3, 50, False)])
    assert evaluate(busy, values, AS_OF).select("window_start", "current_value").rows() == [
        (W2[0], D(40)), (W3[0], D(50))]
    # a change condition given three complete windows compares the last with the one before only
    W0 = (utc(2025, 12, 22), utc(2025, 12, 29))
    rise = make_alert(condition="change_above", threshold=100)
    values = frame([("acme", *W0, 0, True), ("acme", *W1, 500, True), ("acme", *W2, 650, True)])
    assert evaluate(rise, values, AS_OF).select("window_start", "previous_value", "current_value").rows() == [
        (W2[0], D(500), D(650))]
