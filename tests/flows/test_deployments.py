"""Deployments: prefect.yaml and `meterbill serve` declare the same flows, schedules and parameters;
parameters are a typed model whose defaults survive a partial override."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import yaml

from flows.backfill import backfill_flow, segment_task
from flows.deployments import SCHEDULES, PipelineParams, deployments
from flows.run import publish_report_task

REPO = Path(__file__).resolve().parents[2]


def load_entrypoint(entrypoint: str):
    path, func = entrypoint.split(":")
    spec = importlib.util.spec_from_file_location(f"_ep_{func}", REPO / path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return getattr(mod, func)


def test_prefect_yaml_declares_the_served_deployments():
    doc = yaml.safe_load((REPO / "prefect.yaml").read_text())
    declared = {d["name"]: d for d in doc["deployments"]}
    assert set(declared) == set(SCHEDULES)
    for name, (flow, cron, _) in SCHEDULES.items():
        d = declared[name]
        assert load_entrypoint(d["entrypoint"]).name == flow.name, name
        assert [(s["cron"], s["timezone"]) for s in d["schedules"]] == ([(cron, "UTC")] if cron else [])
        assert d["work_pool"]["name"] == "meterbill" and d["concurrency_limit"] == 1
        if flow is backfill_flow:
            assert d["parameters"] == {"lake": "data"}
        else:
            assert PipelineParams.model_validate(d["parameters"]["params"]).lake == "data"


def test_served_deployments_carry_the_lake_and_schedules(tmp_path):
    deps = {d.name: d for d in deployments(str(tmp_path))}
    assert set(deps) == set(SCHEDULES)
    for name, (flow, cron, _) in SCHEDULES.items():
        d = deps[name]
        assert d.flow_name == flow.name
        assert [s.schedule.cron for s in d.schedules or []] == ([cron] if cron else [])
        assert d.parameters == ({"lake": str(tmp_path)} if flow is backfill_flow else {"params": {"lake": str(tmp_path)}})
        assert d.concurrency_limit == 1
    assert [s.schedule.cron for s in deps["hourly"].schedules] == ["5 * * * *"]
    assert not any(d.schedules for d in deployments(str(tmp_path), schedules=False))


def test_a_partial_override_keeps_every_other_default(monkeypatch, tmp_path):
    # Prefect replaces the whole `params` object with the run's: what it leaves out is the model's default
    p = PipelineParams.model_validate({"as_of": "2026-02-10"})
    assert (p.deliver, p.executor, p.workers, p.max_event_age_days) == (True, "local", None, None)
    # ... and the lake is the served one ($METERBILL_LAKE, which `meterbill serve --lake` sets)
    (tmp_path / "catalog").mkdir()
    monkeypatch.setenv("METERBILL_LAKE", str(tmp_path))
    assert p.resolved() == (str(tmp_path), "2026-02-10T00:00:00+00:00")
    assert PipelineParams.model_validate({"lake": "/elsewhere"}).lake == "/elsewhere"


def test_io_tasks_retry_with_growing_delays():
    for t in (segment_task, publish_report_task):
        assert t.retries >= 2
        delays = t.retry_delay_seconds
        assert len(delays) == t.retries and all(b > a > 0 for a, b in zip(delays, delays[1:])), (t.name, delays)


def test_serve_without_a_server_says_how_to_start_one(cli, small_lake):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        code, out, err = cli("serve", "--lake", small_lake)
    assert code == 2, err
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("meterbill serve: error: serve: no Prefect server"), err
    assert "PREFECT_API_URL" in lines[0] and "Traceback" not in err
