"""A real Prefect server on loopback, `meterbill serve` registering the deployments, one run
triggered through the REST API, its warehouse rows checked. Every process is stopped, whatever happens.

The server's scheduler service is off, so the only runs are the ones this test creates (the
deployments' cron schedules are registered and checked, but never fire here).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import httpx
import polars as pl
import pytest

from catalog import Lake
from tests.e2e.conftest import write_lake

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]
AS_OF = "2026-02-03T00:00:00Z"  # the e2e lake's January is final, February a draft
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """This process's environment without any PREFECT_* setting, plus the test's own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "METERBILL_"))}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_UI_ENABLED="false",
               PREFECT_LOGGING_LEVEL="INFO", **extra)
    return env


def stop(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM the process group we started (the process and its children), then SIGKILL."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    try:  # children (a served flow run, uvicorn) may outlive the leader
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        pass


def tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def wait_for(what: str, check, timeout: float, procs: dict[str, tuple[subprocess.Popen, Path]]):
    """Poll `check` until truthy; fail early (with the logs) if a process died. Prints the wait (pytest -s)."""
    t0 = time.monotonic()
    while True:
        value = check()
        if value:
            print(f"{what}: {time.monotonic() - t0:.1f} s")
            return value
        for name, (p, log) in procs.items():
            if p.poll() is not None:
                pytest.fail(f"{name} exited ({p.returncode}) while waiting for {what}:\n{tail(log)}")
        if time.monotonic() - t0 > timeout:
            pytest.fail(f"timed out after {timeout} s waiting for {what}:\n"
                        + "\n".join(f"--- {n}\n{tail(log)}" for n, (_, log) in procs.items()))
        time.sleep(0.5)


def get_json(client: httpx.Client, path: str):
    try:
        r = client.get(path)
    except httpx.HTTPError:
        return None
    return r.json() if r.status_code == 200 else None


def post(client: httpx.Client, path: str, body: dict) -> httpx.Response:
    """POST as Prefect's own client does: a 503 (the server's SQLite busy with another writer, here
    `meterbill serve` registering its deployments) is answered again after a pause, up to 5 times."""
    for _ in range(5):
        r = client.post(path, json=body)
        if r.status_code != 503:
            return r
        time.sleep(1)
    return r


def test_served_deployment_runs_through_a_real_server(tmp_path):
    lake = write_lake(tmp_path / "lake")
    home = tmp_path / "prefect-home"
    home.mkdir()
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    procs: dict[str, tuple[subprocess.Popen, Path]] = {}
    started = time.monotonic()
    try:
        server_log = tmp_path / "server.log"
        procs["prefect server"] = (subprocess.Popen(
            [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=clean_env(home, PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED="false",
                          PREFECT_API_BLOCKS_REGISTER_ON_START="false"), cwd=tmp_path,
            stdout=server_log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True), server_log)
        # started alongside the server: `meterbill serve` waits for the API to answer
        serve_log = tmp_path / "serve.log"
        procs["meterbill serve"] = (subprocess.Popen(
            [str(BIN / "meterbill"), "serve", "--lake", str(lake)],
            env=clean_env(home, PREFECT_API_URL=api, PREFECT_RUNNER_POLL_FREQUENCY="1"), cwd=REPO,
            stdout=serve_log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True), serve_log)

        with httpx.Client(base_url=api, timeout=10) as client:
            wait_for("/api/health", lambda: get_json(client, "/health") is True, 90, procs)
            deps = {}
            for flow_name, name, cron in (("hourly-ingest-and-meter", "hourly", "5 * * * *"),
                                          ("daily-alerts", "daily-alerts", "15 0 * * *"),
                                          ("period-close", "period-close", "30 1 * * *"),
                                          ("backfill", "backfill", None)):
                d = wait_for(f"deployment {flow_name}/{name}",
                             lambda: get_json(client, f"/deployments/name/{flow_name}/{name}"), 90, procs)
                assert [s["schedule"].get("cron") for s in d["schedules"]] == ([cron] if cron else [])
                assert d["schedules"] == [] or d["schedules"][0]["schedule"]["timezone"] == "UTC"
                assert d["parameters"] == ({"lake": str(lake.resolve())} if name == "backfill"
                                           else {"params": {"lake": str(lake.resolve())}})
                deps[name] = d

            # a partial override: {"params": {...}} replaces the deployment's whole `params` object on
            # the server (a shallow merge), so lake, deliver, executor, ... must come from the model's
            # defaults -- lake from $METERBILL_LAKE, which serve set to the served lake
            r = post(client, f"/deployments/{deps['hourly']['id']}/create_flow_run",
                     {"parameters": {"params": {"as_of": AS_OF}}})
            assert r.status_code == 201, r.text
            run = r.json()
            assert run["parameters"] == {"params": {"as_of": AS_OF}}
            done = wait_for("the hourly run to finish", lambda: (
                (fr := get_json(client, f"/flow_runs/{run['id']}")) and fr["state_type"] in TERMINAL and fr), 90, procs)
            assert done["state_type"] == "COMPLETED", f"{done['state']}\n{tail(serve_log)}"

            # what the run wrote, in the served lake (and nowhere else)
            lk = Lake(lake)
            events = lk.read("events")
            assert events.height == 6
            assert sorted(events["unique_id"].to_list()) == ["e1", "e2", "e3", "e4", "e5", "e6"]
            files = lk.read("ingest_files").row(0, named=True)
            assert (files["rows_read"], files["accepted"], files["duplicates"], files["quarantined"]) == (8, 6, 1, 1)
            usage = lk.read("usage_hourly")
            by = dict(usage.group_by("customer_id").agg(pl.col("value").sum()).iter_rows())
            assert by == {"c1": Decimal("350"), "c2": Decimal("177")}
            assert not lk.exists("invoices")  # hourly does not bill

            # its run logs reached the server (at INFO, through Prefect's logger)
            logs = post(client, "/logs/filter", {"limit": 200}).json()
            mine = [e["message"] for e in logs if e["flow_run_id"] == run["id"]]
            assert any(m.startswith(f"hourly: lake {lake.resolve()}") for m in mine), mine
            assert any("raw/batch1.ndjson: 8 rows, 6 accepted" in e["message"] for e in logs), logs
    finally:
        for name in ("meterbill serve", "prefect server"):
            if name in procs:
                stop(procs[name][0])
    for name, (p, _) in procs.items():
        assert p.poll() is not None, f"{name} is still running"
    assert time.monotonic() - started < 110
