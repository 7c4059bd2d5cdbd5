"""Failures surface: a stage that raises fails the run (nothing after it runs), the command line
prints one line and exits 1; a transient I/O error is retried with backoff."""

from __future__ import annotations

import pytest

from catalog import Lake

pytestmark = pytest.mark.usefixtures("prefect_harness")

AS_OF = "2026-02-03T00:00:00Z"


def latest_run(flow_name: str):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName, FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])),
                                     sort=FlowRunSort.START_TIME_DESC, limit=1)
        run = runs[0]
        arts = {a.key: a for a in client.read_artifacts(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))}
    return run, arts


def test_a_failing_stage_fails_the_run_and_the_cli_exits_1(small_lake, cli, monkeypatch):
    import flows.meter

    calls = []

    def broken(*args, **kwargs):
        calls.append(1)
        raise OSError("No space left on device: 'warehouse/usage_hourly'")

    monkeypatch.setattr(flows.meter, "run_meter", broken)
    code, out, err = cli("run", "--lake", small_lake, "--as-of", AS_OF, "--no-deliver")
    assert code == 1
    assert "Traceback" not in out + err
    failed = [l for l in err.splitlines() if "failed" in l and l.startswith("meterbill")]
    assert failed == ["meterbill run: failed: OSError: No space left on device: 'warehouse/usage_hourly'"]
    assert err.rstrip().splitlines()[-1] == failed[0]
    assert len(calls) == 2  # the meter task was retried once before the run gave up

    run, arts = latest_run("run")
    assert run.state.type.value == "FAILED"
    assert "Stage **meter** raised `OSError`" in arts["run-report"].data
    lk = Lake(small_lake)
    assert lk.read("events").height == 6  # what ran before the failure stays (idempotent stages)
    assert not lk.exists("invoices") and not lk.exists("alerts_fired")  # nothing after it ran


def test_a_transient_error_in_a_backfill_segment_is_retried(small_lake, cli, monkeypatch):
    import flows.backfill

    real = flows.backfill.run_alerts
    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise OSError("Connection reset by peer")
        return real(*args, **kwargs)

    monkeypatch.setattr(flows.backfill, "run_alerts", flaky)
    monkeypatch.setattr(flows.backfill, "segment_task",
                        flows.backfill.segment_task.with_options(retry_delay_seconds=0, retry_jitter_factor=None))
    code, out, err = cli("backfill", "--lake", small_lake, "--from", "2026-01-01", "--to", "2026-01-08")
    assert code == 0, err
    run, _ = latest_run("backfill")
    assert run.state.type.value == "COMPLETED"
    # the first segment ran again from its start: 7 daily alert steps + 1 at the end, plus the failed try
    assert len(calls) == 1 + 8
    fired = Lake(small_lake).read("alerts_fired")
    assert fired.select("alert_id", "customer_id").rows() == [("big-day", "c1")]  # 300 calls on 2026-01-05


@pytest.mark.parametrize("args, message", [
    (("--from", "2026-01-01", "--to", "2999-01-01"),
     "meterbill backfill: error: --to: 2999-01-01 is in the future; a backfill re-runs a past range "
     "(`meterbill run` runs as of now)"),
    (("--from", "2026-02-01", "--to", "2026-01-01"), "meterbill backfill: error: --to: must be after --from"),
    (("--from", "last week", "--to", "2026-01-01"),
     "meterbill backfill: error: --from: 'last week' is not an ISO-8601 instant or date (e.g. 2026-02-10T00:00:00Z)"),
])
def test_backfill_refuses_a_bad_range_in_one_line(small_lake, cli, args, message):
    code, out, err = cli("backfill", "--lake", small_lake, *args)
    assert code == 2
    assert [l for l in err.splitlines() if l.strip()] == [message]
    assert not Lake(small_lake).exists("events")  # nothing ran
