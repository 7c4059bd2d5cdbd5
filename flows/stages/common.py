"""What every stage shares: the run's instant, the lake and the catalogue, the display limit,
the one-line usage error, and the DuckDB relations of the catalogue's meters and of a customer shard."""

from __future__ import annotations

import datetime as dt

import duckdb
import pyarrow as pa

from catalog import Catalog, Lake, load_catalog


# SPEC §8: a table a verb prints or publishes (terminal, Prefect artifacts) shows its first rows,
# at most this many, with totals and how to see the rest; its cost never grows with the lake.
MAX_ROWS = 20


class UsageError(Exception):
    """A bad argument: the CLI prints the message as one line and exits 2."""


def parse_instant(value: str | dt.datetime | dt.date | None, name: str = "--as-of") -> dt.datetime:
    """An ISO-8601 instant or date (midnight UTC) -> aware UTC datetime; None -> now."""
    if value is None:
        return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day, tzinfo=dt.timezone.utc)
    text = value.strip()
    try:
        if len(text) == 10:
            d = dt.date.fromisoformat(text)
            return dt.datetime(d.year, d.month, d.day, tzinfo=dt.timezone.utc)
        t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"{name}: {value!r} is not an ISO-8601 instant or date (e.g. 2026-02-10T00:00:00Z)") from None
    return (t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)).astimezone(dt.timezone.utc)


FUTURE_TOLERANCE = dt.timedelta(minutes=5)  # clock skew allowed between machines


def as_of_instant(value: str | dt.datetime | dt.date | None, allow_future: bool = False, name: str = "--as-of",
                  flag: str = "--allow-future") -> dt.datetime:
    """A run's instant (parse_instant), refused if more than 5 minutes after the clock unless
    `allow_future`: a final invoice made as of the future cannot be taken back (SPEC §8)."""
    t = parse_instant(value, name)
    now = dt.datetime.now(dt.timezone.utc)
    if not allow_future and t > now + FUTURE_TOLERANCE:
        raise UsageError(f"{name}: {_z(t)} is in the future (more than 5 minutes after the clock, {_z(now)}); "
                         f"a final invoice made as of the future cannot be taken back: give {flag} if that is meant")
    return t


def _z(t: dt.datetime) -> str:
    return t.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def open_lake(lake: str | None, must_exist: bool = True) -> Lake:
    lk = Lake.open(lake)
    if must_exist and not lk.root.is_dir():
        raise UsageError(f"--lake: {lk.root} does not exist (run `meterbill demo` or create it with a catalog/ folder)")
    return lk


def open_catalog(lk: Lake) -> Catalog:
    """The validated catalogue; raises CatalogError (one line per problem).

    Beyond the loader's own checks, every webhook/slack `payload` template must use known
    placeholders and fill to valid JSON, so a bad template stops the run before anything is sent.
    """
    from catalog import CatalogError
    from transforms.alerts import TemplateError, validate_template

    cat = load_catalog(lk.catalog_dir)
    problems = []
    for i, a in enumerate(cat.alerts.values(), 1):
        for j, ch in enumerate(a.channels):
            if ch.payload is None:
                continue
            try:
                validate_template(ch.payload)
            except TemplateError as e:
                problems.append(f"catalog/alerts.yaml: record {i} (alert_id={a.alert_id}): channels[{j}].payload: {e}")
    if problems:
        raise CatalogError(problems)
    return cat


def register_meter_types(con: duckdb.DuckDBPyConnection, cat: Catalog) -> None:
    """The catalogue's meters as the relation `meter_types(meter_api_name, type)`."""
    con.register("meter_types", pa.table({"meter_api_name": pa.array(list(cat.meters), pa.string()),
                                          "type": pa.array([m.type for m in cat.meters.values()], pa.string())}))


def register_customers(con: duckdb.DuckDBPyConnection, customers: set[str]) -> None:
    """A customer shard as the relation `shard_customers(customer_id)`."""
    con.register("shard_customers", pa.table({"customer_id": pa.array(sorted(customers), pa.string())}))
