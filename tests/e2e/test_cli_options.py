"""The command line's options: --version, help on every option of every verb, --workers at least 1."""

import importlib.metadata

import pytest
import typer

from tests.e2e.test_cli_errors import one_line


def test_version_prints_the_version(cli):
    code, out, err = cli("--version")
    assert (code, out, err) == (0, f"meterbill {importlib.metadata.version('meterbill')}\n", "")


def test_every_option_and_argument_of_every_verb_has_help():
    from flows.cli.shared import app

    root = typer.main.get_command(app)
    missing = [("meterbill", p.name) for p in root.params if not getattr(p, "help", None)]
    assert root.commands, "no verbs found"
    for name, cmd in root.commands.items():
        assert cmd.help, name
        assert cmd.params, name
        for p in cmd.params:  # typer's options and arguments (its own click's classes) all carry `help`
            assert p.param_type_name in ("option", "argument"), (name, p)
            if not (getattr(p, "help", None) or "").strip():
                missing.append((name, p.name))
    assert missing == []


@pytest.mark.parametrize("verb", ["run", "meter", "bill", "alerts"])
def test_workers_must_be_at_least_one(cli, small_lake, verb):
    code, out, err = cli(verb, "--lake", small_lake, "--executor", "dask", "--workers", 0)
    assert code == 2
    assert one_line(err) == f"meterbill {verb}: error: Invalid value for '--workers': Input should be greater than or equal to 1"
    assert not (small_lake / "warehouse").exists()


def test_backfill_workers_must_be_at_least_one(cli, small_lake):
    code, out, err = cli("backfill", "--lake", small_lake, "--from", "2026-01-01", "--to", "2026-02-01",
                         "--executor", "dask", "--workers", 0)
    assert code == 2
    assert one_line(err) == "meterbill backfill: error: Invalid value for '--workers': Input should be greater than or equal to 1"
