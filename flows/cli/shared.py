"""What the verbs share: the `meterbill` application, its consoles, the common options, `--version`."""

from __future__ import annotations

import functools
import sys
from typing import Optional

import typer
from rich.console import Console

from flows.stages.common import UsageError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="meterbill: usage metering and billing as a batch analytics job.")
# Wide enough for an invoice table when the output is a file or a pipe (rich would use 80).
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, highlight=False, soft_wrap=True, width=None if sys.stderr.isatty() else 160)

LAKE = typer.Option(None, "--lake", help="The lake folder (default: $METERBILL_LAKE or data/).")
AS_OF = typer.Option(None, "--as-of", help="The run's instant, ISO-8601 or a date (default: now); "
                     "more than 5 minutes after the clock needs --allow-future.")
ALLOW_FUTURE = typer.Option(False, "--allow-future",
                            help="Accept an --as-of in the future (its final invoices cannot be taken back).")
EXECUTOR = typer.Option("local", "--executor", help="local or dask.")
WORKERS = typer.Option(None, "--workers", min=1, help="With --executor dask: start a temporary local cluster of N workers.")
DASK_ADDRESS = typer.Option(None, "--dask-address", help="With --executor dask: use an existing cluster.")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("meterbill")
    except PackageNotFoundError:  # pragma: no cover  (run from a source tree without installing)
        return "unknown (not installed)"


def _print_version(value: bool) -> None:
    if value:
        out.print(f"meterbill {_version()}")
        raise typer.Exit(0)


@app.callback()
def _main(version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                       help="Print meterbill's version and exit.")):
    """meterbill: usage metering and billing as a batch analytics job."""


def executor_options(executor: str, workers: Optional[int], address: Optional[str]) -> dict:
    if executor not in ("local", "dask"):
        raise UsageError(f"--executor: must be local or dask, got {executor!r}")
    if executor == "local" and (workers or address):
        raise UsageError("--workers and --dask-address go with --executor dask")
    return {"executor": executor, "workers": workers, "dask_address": address}


def progress_line(line: str) -> None:
    err.print(f"[dim]{line}[/dim]")


def local_flows(fn):
    """A verb that runs flows, on the local Prefect API as flows/common.py `local_engine` sets it up
    (no heartbeats, task runs recorded in batches). Applied per verb so that `--help` and the table
    verbs never import Prefect."""
    @functools.wraps(fn)
    def verb(*args, **kwargs):
        from flows.engine import local_engine

        with local_engine():
            return fn(*args, **kwargs)

    return verb


def summary_line(verb: str, rep) -> str:
    if isinstance(rep, dict):
        return f"{verb}: " + ", ".join(f"{k} {v}" for k, v in rep.items() if not isinstance(v, (list, dict)))
    return f"{verb}: {rep}"
