"""A small valid catalogue to break one file at a time."""

import textwrap
from pathlib import Path

import pytest

BASE = {
    "customers.yaml": """
        - {customer_id: c1, customer_name: One Corp, timezone: Europe/Berlin}
        - {customer_id: c2, customer_name: Two Ltd}
    """,
    "meters.yaml": """
        - {meter_api_name: api_calls, label: API calls, type: sum, unit: calls}
    """,
    "product_items.yaml": """
        - {product_item_id: api, name: API calls, meter_api_name: api_calls}
    """,
    "plans.yaml": """
        - plan_id: basic
          currency: USD
          billing_period: {interval: month, count: 1}
          fees: [{fee_id: base, name: Base fee, amount: "10.00", cadence: recurring}]
          items:
            - {product_item_id: api, price: {model: per_unit, unit_price: "0.01"}}
    """,
    "subscriptions.yaml": """
        - {subscription_id: s1, customer_id: c1, plan_id: basic, start: 2026-01-01}
        - {subscription_id: s2, customer_id: c2, plan_id: basic, start: 2026-01-01}
    """,
}


def write(folder: Path, files: dict[str, str | bytes | None], base: dict = BASE) -> Path:
    """`folder` with the base catalogue, `files` replacing (text), adding, or removing (None) files."""
    folder.mkdir(parents=True, exist_ok=True)
    merged = {**base, **files}
    for name, body in merged.items():
        if body is None:
            continue
        if isinstance(body, bytes):
            (folder / name).write_bytes(body)
        else:
            (folder / name).write_text(textwrap.dedent(body))
    return folder


def problems(folder: Path) -> list[str]:
    from catalog import CatalogError, load_catalog

    with pytest.raises(CatalogError) as e:
        load_catalog(folder)
    return e.value.problems
