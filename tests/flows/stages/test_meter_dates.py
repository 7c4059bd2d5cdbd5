"""The dates `meter` rebuilds are one rule, `transforms.metering.hourly_rebuild_dates`: the dates of
the new events, plus, for a stateful meter, every later date on which the same customer has events
of that meter (its level carries into them) — not every later date of the lake."""

from __future__ import annotations

import datetime as dt
import json
import textwrap
from decimal import Decimal

import polars as pl

from catalog import Lake, load_catalog

UTC = dt.timezone.utc
AS_OF = dt.datetime(2026, 2, 1, tzinfo=UTC)

CATALOG = {
    "customers.yaml": """
        - {customer_id: c1, customer_name: One}
        - {customer_id: c2, customer_name: Two}
    """,
    "meters.yaml": """
        - {meter_api_name: calls, type: sum}
        - {meter_api_name: seats, type: running_total}
    """,
}


def ms(day: int, hour: int = 9) -> int:
    return int(dt.datetime(2026, 1, day, hour, tzinfo=UTC).timestamp() * 1000)


def ndjson(rows: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def test_meter_rebuilds_the_dates_hourly_rebuild_dates_names(tmp_path):
    from flows.stages.ingest import run_ingest
    from flows.stages.meter import run_meter
    from transforms.metering import hourly_rebuild_dates, hourly_usage

    root = tmp_path / "lake"
    (root / "catalog").mkdir(parents=True)
    for name, text in CATALOG.items():
        (root / "catalog" / name).write_text(textwrap.dedent(text))
    (root / "raw").mkdir()
    # c1's seats on Jan 10 (+1) and Jan 14 (+1); c2's calls every day Jan 10..16
    first = [{"customer_id": "c1", "meter_api_name": "seats", "meter_value": 1, "meter_time_in_millis": ms(d),
              "unique_id": f"s{d}"} for d in (10, 14)]
    first += [{"customer_id": "c2", "meter_api_name": "calls", "meter_value": d, "meter_time_in_millis": ms(d),
               "unique_id": f"c{d}"} for d in range(10, 17)]
    (root / "raw" / "a.ndjson").write_text(ndjson(first))
    lk = Lake(root)
    cat = load_catalog(lk.catalog_dir)
    run_ingest(lk, cat, AS_OF, ingested_at=dt.datetime(2026, 2, 1, 0, 1, tzinfo=UTC))
    assert run_meter(lk, cat, AS_OF)["full"] is True
    seen = lk.read("events")
    # a late +2 seats for c1 on Jan 12: its level carries into c1's seats on Jan 14 (1 + 2 + 1 = 4)
    late = [{"customer_id": "c1", "meter_api_name": "seats", "meter_value": 2, "meter_time_in_millis": ms(12),
             "unique_id": "late"}]
    (root / "raw" / "b.ndjson").write_text(ndjson(late))
    run_ingest(lk, cat, AS_OF, ingested_at=dt.datetime(2026, 2, 1, 0, 2, tzinfo=UTC))
    events = lk.read("events")
    new = events.join(seen.select("unique_id"), on="unique_id", how="anti")
    want = hourly_rebuild_dates(new, events, cat.meters)
    assert want == [dt.date(2026, 1, 12), dt.date(2026, 1, 14)]  # not Jan 13, 15, 16 (only c2's calls)

    # the two partitions hold c1's seats and c2's calls of those days: 4 rows
    assert run_meter(lk, cat, AS_OF) == {"dates_rebuilt": 2, "rows": 4, "full": False}
    usage = lk.read("usage_hourly").sort("customer_id", "meter_api_name", "hour")
    seats = usage.filter(pl.col("meter_api_name") == "seats")
    assert seats.select("hour", "value").rows() == [
        (dt.datetime(2026, 1, 10, 9, tzinfo=UTC), Decimal(1)),
        (dt.datetime(2026, 1, 12, 9, tzinfo=UTC), Decimal(3)),
        (dt.datetime(2026, 1, 14, 9, tzinfo=UTC), Decimal(4)),
    ]
    full = hourly_usage(events, cat.meters).sort("customer_id", "meter_api_name", "hour")
    assert usage.select(full.columns).equals(full)
