"""The `meterbill` command line (SPEC §8).

Every verb that moves data runs as a Prefect flow. Errors are for people: a bad argument or a
bad catalogue prints one line per problem and exits non-zero, never a traceback.

The verbs are registered on `app` (flows/cli/shared.py) by flows/cli/pipeline.py and
flows/cli/tools.py, in the order `--help` lists them; `main` is the `meterbill` entry point.
"""

from __future__ import annotations

import os
import sys

# The terminal shows meterbill's own lines; Prefect's console handler would print tracebacks of
# failed runs (they still reach the Prefect API and UI). METERBILL_DEBUG=1 keeps them on screen.
if not os.environ.get("METERBILL_DEBUG"):
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")

import typer  # noqa: E402

try:  # typer ≥ 0.20 vendors its own click
    from typer._click import exceptions as click_exc
except ImportError:  # pragma: no cover
    from click import exceptions as click_exc

from catalog import CatalogError  # noqa: E402
from catalog.lake import WarehouseError, forget_remote_lakes, push_remote_lakes  # noqa: E402
from flows.cli import pipeline, tools  # noqa: E402,F401  (the verbs, in --help order)
from flows.cli.shared import app, err, out  # noqa: E402
from flows.stages.common import UsageError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """`meterbill ARGS`: run one verb; returns the exit code."""
    cmd = typer.main.get_command(app)
    args = sys.argv[1:] if argv is None else argv
    verb = next((a for a in args if not a.startswith("-")), "")
    try:
        cmd.main(args=args, prog_name="meterbill", standalone_mode=False)
        push_remote_lakes()  # an s3:// lake: upload what the command wrote (nothing if it failed)
    except click_exc.NoArgsIsHelpError as e:  # plain `meterbill`: help, exit 0
        out.print(e.ctx.get_help())
        return 0
    except typer.Exit as e:
        return e.exit_code
    except typer.Abort:
        err.print("meterbill: aborted")
        return 130
    except click_exc.UsageError as e:
        err.print(f"meterbill {verb}: error: {' '.join(e.format_message().split())}".replace("  ", " "))
        return 2
    except UsageError as e:
        err.print(f"meterbill {verb}: error: {e}")
        return 2
    except CatalogError as e:
        for p in e.problems:
            err.print(p)
        err.print(f"meterbill {verb}: the catalogue has {len(e.problems)} problem(s); nothing was written")
        return 1
    except KeyboardInterrupt:
        err.print("meterbill: interrupted")
        return 130
    except WarehouseError as e:  # a warehouse folder or file: the message names it and what to do
        err.print(f"meterbill {verb}: error: {e}")
        return 1
    except Exception as e:  # a failure, not a bug report: one line; METERBILL_DEBUG=1 shows the traceback
        if os.environ.get("METERBILL_DEBUG"):
            raise
        err.print(f"meterbill {verb}: failed: {type(e).__name__}: {' '.join(str(e).split())[:500]}")
        return 1
    finally:
        forget_remote_lakes()
    return 0


if __name__ == "__main__":
    sys.exit(main())
