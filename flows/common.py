"""Shared plumbing of the flows: the run's instant, the lake and the catalogue."""

from __future__ import annotations

import contextlib
import datetime as dt

import duckdb
import pyarrow as pa

from catalog import Catalog, Lake, load_catalog


# SPEC §8: a table a verb prints or publishes (terminal, Prefect artifacts) shows its first rows,
# at most this many, with totals and how to see the rest; its cost never grows with the lake.
MAX_ROWS = 20


class UsageError(Exception):
    """A bad argument: the CLI prints the message as one line and exits 2."""


def not_a_warehouse_error(task, task_run, state) -> bool:
    """A task's retry condition: retry unless a warehouse folder or file is at fault (it would
    fail again, and the error already says what to do)."""
    from catalog.lake import WarehouseError

    try:
        exc = state.result(raise_on_failure=False)
    except Exception:  # noqa: BLE001
        return True
    return not isinstance(exc, WarehouseError)


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


LOCAL_RECORDER_BATCH = 1000  # task-run events per write of the local API's recorder (local_engine)


@contextlib.contextmanager
def local_engine():
    """Flow runs of this process against the local (ephemeral) Prefect API: no heartbeats, and the
    API's task-run recorder writes in batches.

    - A flow run's heartbeat thread sleeps in 1 s steps and the engine waits for it at the end of
      every flow run (≈ 0.5 s a flow run, a third of a small run's time). Heartbeats let a server
      notice a crashed run; the ephemeral API stops with this process, so nobody would.
    - The recorder writes every task-run event to the API's SQLite database in its own transaction
      as it comes. The next flow run's creation, which reads then writes, then often finds the
      database changed under it: the API answers 503 ("database is locked") and the client waits
      2 s before it tries again (PrefectHQ/prefect#18934). Batched, the recorder writes every 5 s
      and when the API stops; task runs are all recorded, up to 5 s later.

    The recorder's batch reaches the API only if it starts inside this context (the first flow of
    the process). With PREFECT_API_URL set (a real server, deployments) the settings are the server's.

    In both cases the objects alive when the context is entered (the imported modules: Prefect,
    pydantic, SQLAlchemy, Polars, ≈ 300,000 objects) are frozen for the garbage collector
    (`gc.freeze`) until it is left: they live as long as the process, and the collector's full
    passes walked all of them again each time a flow's own objects (the catalogue's records, say)
    set one off — ≈ 0.35 s a pass, once or twice a run. Unfrozen on the way out, so that the
    interpreter frees them as usual at exit."""
    from prefect.settings import (PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
                                  PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE, get_current_settings,
                                  temporary_settings)

    with _frozen_imports():
        if get_current_settings().api.url:
            yield
            return
        with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None,
                                         PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE: LOCAL_RECORDER_BATCH}):
            yield


@contextlib.contextmanager
def _frozen_imports():
    """gc.freeze() for the context (local_engine); a nested context leaves the outer one's freeze."""
    import gc

    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
