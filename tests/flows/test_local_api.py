"""`meterbill demo` as a user runs it first: a fresh process, a fresh PREFECT_HOME, the ephemeral
Prefect API. The local API's task-run recorder writes in batches (flows/engine.py local_engine);
every task run must still be in the API's database, in its final state, once the command is done."""

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def test_demo_in_a_fresh_process_records_every_flow_and_task_run(tmp_path):
    home = tmp_path / "prefect-home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_UI_ENABLED="false",
               PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="90")
    r = subprocess.run([str(BIN / "meterbill"), "demo", "--lake", str(tmp_path / "lake"), "--days", "3",
                        "--events-per-day", "200", "--as-of", "2026-11-04T00:00:00Z"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "invoice" in r.stdout.lower()
    # the imports frozen for the garbage collector during the run are unfrozen before exit: frozen,
    # they would never be freed and DuckDB's bindings print "leaked …" lines at interpreter exit
    assert "leak" not in r.stderr, r.stderr[-3000:]

    con = sqlite3.connect(home / "prefect.db")
    runs = con.execute("""
        SELECT f.name, fr.state_type,
               (SELECT count(*) FROM task_run t WHERE t.flow_run_id = fr.id),
               (SELECT count(*) FROM task_run t WHERE t.flow_run_id = fr.id AND t.state_type = 'COMPLETED')
        FROM flow_run fr JOIN flow f ON f.id = fr.flow_id""").fetchall()
    by_flow = {name: (state, tasks, done) for name, state, tasks, done in runs}
    assert len(by_flow) == len(runs), runs  # one run of each flow
    for stage in ("ingest", "meter", "bill", "alerts"):
        assert stage in by_flow, runs
    for name, (state, tasks, done) in by_flow.items():
        assert state == "COMPLETED", (name, state)
        assert tasks == done, (name, tasks, done)  # every recorded task run reached its final state
    # the stages' own tasks: ingest plans, ingests one group of files and commits; meter and bill one task each
    assert by_flow["ingest"][1] == 3 and by_flow["meter"][1] == 1 and by_flow["bill"][1] == 1, runs


def test_local_engine_freezes_the_objects_alive_at_its_start_until_it_ends():
    import gc

    from flows.engine import local_engine

    assert gc.get_freeze_count() == 0
    with local_engine():
        assert gc.get_freeze_count() > 10_000  # the imported modules, Prefect's among them
        with local_engine():  # nested (a verb calling another): the inner one does not unfreeze
            pass
        # still frozen (a frozen object whose last reference goes is still freed: the count may drop a little)
        assert gc.get_freeze_count() > 10_000
    assert gc.get_freeze_count() == 0
