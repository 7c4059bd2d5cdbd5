"""The Prefect engine of this process: a task's retry condition, and the settings of flow runs
against the local (ephemeral) Prefect API."""

from __future__ import annotations

import contextlib


def not_a_warehouse_error(task, task_run, state) -> bool:
    """A task's retry condition: retry unless a warehouse folder or file is at fault (it would
    fail again, and the error already says what to do)."""
    from catalog.lake import WarehouseError

    try:
        exc = state.result(raise_on_failure=False)
    except Exception:  # noqa: BLE001
        return True
    return not isinstance(exc, WarehouseError)


LOCAL_RECORDER_BATCH = 1000  # task-run events per write of the local API's recorder (local_engine)


@contextlib.contextmanager
def local_engine():
    """Flow runs of this process against the local (ephemeral) Prefect API: no heartbeats, and the
    API's task-run recorder writes in batches.

    - Heartbeats let a server notice a crashed run; the ephemeral API stops with this process, so
      nobody would, and the engine waits for the heartbeat thread at the end of every flow run.
    - A recorder writing every task-run event in its own transaction makes the next flow run's
      creation find the database changed under it (the API answers 503, "database is locked", and
      the client waits before it tries again). Batched (LOCAL_RECORDER_BATCH events at a time),
      the recorder writes every 5 s and when the API stops; task runs are all recorded, up to 5 s
      later.

    The recorder's batch reaches the API only if it starts inside this context (the first flow of
    the process). With PREFECT_API_URL set (a real server, deployments) the settings are the server's.

    In both cases the objects alive when the context is entered (the imported modules) are frozen
    for the garbage collector (`gc.freeze`) until it is left: they live as long as the process, and
    the collector's full passes need not walk them again. Unfrozen on the way out, so that the
    interpreter frees them as usual at exit. What each of these saves: bench/notes.md."""
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
