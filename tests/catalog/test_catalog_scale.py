"""A catalogue of 100,000 customers and subscriptions loads in seconds, in YAML, CSV or Parquet (SPEC §3)."""

import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench.catalog_gen import write_catalog  # noqa: E402

# CPU seconds for load_catalog of 100,000 customers, 100,000 subscriptions and 20,000 credits. The goal
# is 3 s of wall time on an idle machine; the bound leaves room for a machine shared with other work.
BUDGET_CPU_S = 6.0


@pytest.mark.parametrize("fmt", ["yaml", "csv", "parquet"])
def test_100k_customer_catalogue_loads_in_seconds(tmp_path, fmt):
    from catalog import load_catalog

    folder = write_catalog(tmp_path / "catalog", customers=100_000, fmt=fmt, seed=3)
    t0 = time.process_time()
    cat = load_catalog(folder)
    cpu = time.process_time() - t0
    assert (len(cat.customers), len(cat.subscriptions), len(cat.credits)) == (100_000, 100_000, 20_000)
    assert cpu < BUDGET_CPU_S, f"{fmt}: load_catalog took {cpu:.1f} CPU seconds"
