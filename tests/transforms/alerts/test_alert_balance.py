"""prepaid_balance (SPEC §6): at a window's end, the customer's grants in effect then, each at its
last ledger balance before that end, or its amount if never drawn."""

import datetime as dt
from decimal import Decimal as D

import polars as pl

from catalog.config import Catalog, Credit, Customer
from catalog.schemas import DEC, TS, empty
from transforms.alerts.values import _balance

UTC = dt.timezone.utc


def t(s: str) -> dt.datetime:
    return dt.datetime.fromisoformat(s).replace(tzinfo=UTC)


def test_prepaid_balance_is_each_grants_last_balance_before_the_window_end():
    cat = Catalog(
        customers={c: Customer(customer_id=c, customer_name=c, timezone=tz)
                   for c, tz in (("a", "UTC"), ("b", "Asia/Tokyo"), ("z", "UTC"))},
        credits={g.grant_id: g for g in (
            Credit(grant_id="g1", customer_id="a", amount=D("100"), currency="USD", effective_at=dt.date(2026, 1, 1)),
            Credit(grant_id="g2", customer_id="a", amount=D("20"), currency="USD", effective_at=dt.date(2026, 1, 10)),
            Credit(grant_id="g3", customer_id="a", amount=D("50"), currency="USD", effective_at=dt.date(2026, 1, 1),
                   expires_at=dt.date(2026, 2, 1)),
            # Tokyo midnight of Feb 1 is Jan 31 15:00 UTC: in effect at a window ending Feb 1 00:00 UTC
            Credit(grant_id="g4", customer_id="b", amount=D("7.5"), currency="USD", effective_at=dt.date(2026, 2, 1)),
        )},
    )
    ledger = pl.concat([empty("credit_ledger"), pl.DataFrame({
        "grant_id": ["g1", "g1", "g3"], "customer_id": ["a", "a", "a"], "entry": ["draw"] * 3,
        "at": [t("2026-01-01T00:00:00"), t("2026-02-01T00:00:00"), t("2026-01-01T00:00:00")],
        "balance_after": [D("60"), D("30"), D("45")],
    }, schema_overrides={"at": TS, "balance_after": DEC})], how="diagonal_relaxed")
    wf = pl.DataFrame({
        "customer_id": ["a", "a", "a", "b", "z"],
        "window_start": [t("2026-01-04T00:00:00"), t("2026-01-31T00:00:00"), t("2026-02-01T00:00:00"),
                         t("2026-01-31T00:00:00"), t("2026-01-31T00:00:00")],
        "window_end": [t("2026-01-05T00:00:00"), t("2026-02-01T00:00:00"), t("2026-02-02T00:00:00"),
                       t("2026-02-01T00:00:00"), t("2026-02-01T00:00:00")],
        "complete": [True] * 5,
    }, schema_overrides={"window_start": TS, "window_end": TS})
    got = _balance(cat, wf, ledger).sort("customer_id", "window_start")
    assert got["value"].to_list() == [
        D("105"),        # Jan 5: g1 at 60 (drawn Jan 1), g3 at 45; g2 not yet in effect
        D("80"),         # Feb 1: g1 still 60 (the Feb 1 draw is not before the end), g2 20; g3 has expired
        D("50"),         # Feb 2: g1 30, g2 20
        D("7.5"),        # b: in effect from Tokyo's Feb 1, never drawn
        D("0"),          # z: no grant
    ]
    assert got.columns == ["customer_id", "window_start", "window_end", "value", "complete"]
