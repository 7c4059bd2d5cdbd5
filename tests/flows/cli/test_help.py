"""The CLI package registers every verb on one application, in the order `meterbill --help` lists
them (SPEC §8's verbs; `simulate` is not built yet), and `--help` imports no Prefect."""

from __future__ import annotations

import subprocess
import sys

VERBS = ["check", "generate", "ingest", "meter", "bill", "alerts", "run", "backfill", "usage", "sql", "reconcile",
         "report", "serve", "demo"]


def test_help_lists_every_verb_in_order(capsys):
    import typer

    from flows.cli import main
    from flows.cli.shared import app

    group = typer.main.get_command(app)
    assert group.list_commands(None) == VERBS
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    at = [out.index(f"│ {v} ") for v in VERBS]  # each verb starts a line of the Commands box, in order
    assert at == sorted(at)


def test_help_imports_no_prefect():
    code = ("import sys; from flows.cli import main; rc = main(['--help']); "
            "print('PREFECT' if any(m == 'prefect' or m.startswith('prefect.') for m in sys.modules) else 'none')")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip().splitlines()[-1] == "none"
