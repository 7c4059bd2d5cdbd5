"""notebooks/explore.ipynb runs top to bottom against a generated lake, in a kernel of this interpreter."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO / "notebooks" / "explore.ipynb"


def test_the_committed_notebook_has_no_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, "the notebook has no code cells"
    for i, c in enumerate(code):
        assert c.outputs == [] and c.execution_count is None, f"code cell {i} was committed with outputs"


@pytest.fixture
def kernel_env(tmp_path, monkeypatch, demo_lake):
    """A `python3` kernelspec that starts ipykernel with this interpreter, found before any
    kernelspec installed for the user or the system (JUPYTER_PATH comes first), and a clean
    HOME so no user configuration leaks in."""
    spec = tmp_path / "jupyter" / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "meterbill (this interpreter)", "language": "python",
    }))
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("METERBILL_LAKE", str(demo_lake))
    monkeypatch.delenv("JUPYTER_CONFIG_DIR", raising=False)
    monkeypatch.delenv("JUPYTER_DATA_DIR", raising=False)
    return tmp_path


def test_the_notebook_runs_top_to_bottom_on_a_demo_lake(kernel_env):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    work = kernel_env / "work"  # the kernel's working directory: nothing lands in notebooks/
    work.mkdir()
    client = NotebookClient(nb, kernel_name="python3", timeout=180, allow_errors=False,
                            resources={"metadata": {"path": str(work)}})
    client.execute()  # raises CellExecutionError, naming the cell, if any cell errors

    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert f"lake: {Path(os.environ['METERBILL_LAKE'])}" in text
    assert "0 invoices whose amounts differ from their lines" in text
    charts = [o for o in outputs if o.output_type == "display_data" and "image/png" in o.get("data", {})]
    # top by usage, top by spend, daily usage per meter, invoice breakdown, one invoice, quarantine
    assert len(charts) >= 6, f"expected 6 charts, the notebook drew {len(charts)}"
    tables = [o for o in outputs if o.output_type == "execute_result" and "text/html" in o.get("data", {})]
    assert len(tables) >= 5
