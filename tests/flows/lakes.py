"""Small lakes for the orchestration tests: the e2e catalogue, events over three months."""

from __future__ import annotations

import datetime as dt
import json
import random
from pathlib import Path

from tests.e2e.conftest import CATALOG, write_lake

START = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
END = dt.datetime(2026, 4, 1, tzinfo=dt.timezone.utc)  # three monthly periods: Jan, Feb, Mar

# a week-over-week drop alert as well as the e2e catalogue's day threshold, so the replay's
# alert steps have something to find in several windows
ALERTS = CATALOG["alerts.yaml"] + """
        - alert_id: weekly-drop
          name: Calls down 50% week over week
          metric: usage
          meter_api_name: api_calls
          scope: all_customers
          window: week
          condition: percent_change_below
          threshold: 50
"""


def three_month_events(seed: int = 7, per_day: int = 6) -> list[list[dict]]:
    """Events of c1, c2 (and an undefined c9) every day of Jan–Mar 2026, as one list per month
    (one raw file each), with a few re-sent duplicates and one bad record per month."""
    rnd = random.Random(seed)
    months: list[list[dict]] = [[], [], []]
    day = START
    n = 0
    while day < END:
        for _ in range(per_day):
            n += 1
            t = day + dt.timedelta(seconds=rnd.randrange(86400))
            cust = rnd.choice(["c1", "c1", "c2", "c9"])
            value = rnd.randrange(1, 120) if day.day != 12 else 400  # the 12th is a big day
            ev = {"customer_id": cust, "meter_api_name": "api_calls", "meter_value": value,
                  "meter_time_in_millis": int(t.timestamp() * 1000), "unique_id": f"u{n}"}
            months[day.month - 1].append(ev)
            if n % 17 == 0:
                months[day.month - 1].append(dict(ev))  # a re-send: a duplicate
        day += dt.timedelta(days=1)
    for m in months:
        m.append({"meter_api_name": "api_calls", "meter_value": 1, "meter_time_in_millis": 1767571200000})
    return months


def write_three_month_lake(root: Path, seed: int = 7) -> Path:
    catalog = dict(CATALOG)
    catalog["alerts.yaml"] = ALERTS
    write_lake(root, events=[], catalog=catalog)
    (root / "raw" / "batch1.ndjson").unlink()
    for i, events in enumerate(three_month_events(seed), 1):
        (root / "raw" / f"2026-{i:02d}.ndjson").write_text("".join(json.dumps(e) + "\n" for e in events))
    return root
