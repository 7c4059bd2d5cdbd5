"""The percentage change has one home (SPEC §4, used by §6's alerts): the usage query's
percent_from_previous and the alerts' percent conditions and messages give the same number."""

import datetime as dt
from decimal import Decimal as D

import polars as pl

from catalog.config import Alert, Meter
from catalog.schemas import SCHEMAS
from tests.transforms.metering.support import evs
from transforms.alerts import evaluate
from transforms.metering import usage_query

UTC = dt.timezone.utc
SUM = Meter(meter_api_name="m", type="sum")
DAYS = [(dt.datetime(2026, 1, d, tzinfo=UTC), dt.datetime(2026, 1, d + 1, tzinfo=UTC)) for d in (1, 2, 3)]


def query_pct(daily: list) -> list[float]:
    ev = evs([[f"2026-01-0{i + 1}T12:00:00Z", v] for i, v in enumerate(daily) if v != 0])
    q = usage_query(ev, SUM, window="day", start=dt.date(2026, 1, 1), end=dt.date(2026, 1, 1 + len(daily)))
    return q["percent_from_previous"].to_list()


def alert_firing(condition: str, threshold, prev, cur) -> pl.DataFrame:
    alert = Alert(alert_id="a", name="a", metric="usage", meter_api_name="m", scope="per_customer",
                  window="day", condition=condition, threshold=threshold)
    values = pl.DataFrame(
        [{"customer_id": "c1", "window_start": s, "window_end": e, "value": D(v), "complete": True}
         for (s, e), v in zip(DAYS, (prev, cur))],
        schema={"customer_id": pl.String, "window_start": SCHEMAS["alerts_fired"]["window_start"],
                "window_end": SCHEMAS["alerts_fired"]["window_end"], "value": pl.Decimal(38, 9),
                "complete": pl.Boolean})
    return evaluate(alert, values, DAYS[2][0])


def test_amberflo_example_is_the_same_number_in_the_query_and_the_alerts():
    assert query_pct([0, 4040, 19605]) == [0, 100, 385.2722772277228]
    # 385.2722772...% exactly: at least 385.272277227 fires, 385.272277228 does not
    assert alert_firing("percent_change_above", "385.272277227", 4040, 19605).height == 1
    assert alert_firing("percent_change_above", "385.272277228", 4040, 19605).height == 0
    assert "changed 385.27% (4040 -> 19605)" in alert_firing("percent_change_above", 300, 4040, 19605)["message"][0]
    assert alert_firing("percent_change_above", 100, 0, 4040).height == 1   # prev = 0 < cur: 100


def test_negative_previous_value_follows_the_spec_formula_literally():
    """(cur − prev) / prev × 100 as written: −10 → −5 is (−5 − −10) / −10 × 100 = −50, in both."""
    assert query_pct([-10, -5]) == [0, -50.0]
    down = alert_firing("percent_change_below", 50, -10, -5)
    assert down.select("previous_value", "current_value").rows() == [(D(-10), D(-5))]
    assert "changed -50% (-10 -> -5)" in down["message"][0]
    assert alert_firing("percent_change_above", 50, -10, -5).height == 0
    # prev = 0 > cur: −100, the mirror of §4's 100 for prev = 0 < cur, in both
    assert query_pct([0, -3]) == [0, -100.0]
    assert alert_firing("percent_change_below", 100, 0, -3).height == 1


def test_percent_change_has_one_home():
    import importlib

    from transforms.shared.percent import percent_change, percent_change_float

    # by module name: the packages export functions named like their modules (`evaluate`)
    alerts_evaluate = importlib.import_module("transforms.alerts.evaluate")
    metering_query = importlib.import_module("transforms.metering.query")

    assert alerts_evaluate.percent_change is percent_change
    assert metering_query.percent_change_float is percent_change_float
