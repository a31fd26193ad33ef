"""The notebooks in ``notebooks/`` run top to bottom on tiny settings and draw figures.

Each notebook is executed with ``nbclient`` in a ``python3`` kernel running this interpreter, with
this checkout first on ``PYTHONPATH`` and a temporary working directory. A failing cell fails the
test; an executed notebook must hold at least one ``image/png`` output. The committed notebooks
must carry no outputs, and running them must write only into their temporary folder.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nbclient
import nbformat
import pytest
from jupyter_client.manager import KernelManager

# slow tier (executes the notebooks): python -m pytest -m slow
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
KERNEL = "python3"


def _notebooks_snapshot() -> dict[str, float]:
    """Modification times under ``notebooks/``, where a notebook run from its folder would write.

    (The rest of the tree is not watched: other processes may legitimately change it meanwhile.)
    """
    return {str(p): p.stat().st_mtime for p in (REPO / "notebooks").rglob("*")}


def test_notebooks_exist():
    names = [p.name for p in NOTEBOOKS]
    assert names == ["01_data_exploration.ipynb", "02_multitask_training.ipynb", "03_weighting_strategies.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, f"{path.name} has no code cell"
    assert all(not c.outputs and c.execution_count is None for c in code), f"{path.name} is stored with outputs"
    assert nb.metadata.get("kernelspec", {}).get("name") == KERNEL


def _execute(path: Path, tmp_path: Path, monkeypatch, env: dict[str, str] | None = None) -> nbformat.NotebookNode:
    """Run ``path`` top to bottom in a python3 kernel of this interpreter; the executed notebook."""
    # the kernel must be this interpreter (the venv with medmtl's dependencies): jupyter_client
    # substitutes sys.executable for the "python" of the python3 kernel spec that ipykernel ships
    cmd = KernelManager(kernel_name=KERNEL).format_kernel_cmd()
    assert Path(cmd[0]).resolve() == Path(sys.executable).resolve(), f"kernel {KERNEL!r} would run {cmd[0]}, not {sys.executable}"
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    # CI exports MPLBACKEND=Agg for scripts; figures in a kernel need the inline backend
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    monkeypatch.delenv("MEDMTL_EXPERIMENT_TABLE", raising=False)
    monkeypatch.delenv("MEDMTL_DATALIST", raising=False)
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the notebooks' tempfile.mkdtemp() land in this test's folder
    for key, value in (env or {}).items():
        monkeypatch.setenv(key, value)
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, kernel_name=KERNEL, timeout=300, resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError naming the cell on the first failing cell
    return nb


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_and_draws(path, tmp_path, monkeypatch):
    before = _notebooks_snapshot()
    nb = _execute(path, tmp_path, monkeypatch)

    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    assert images, f"{path.name} drew no figure"
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.get("output_type") == "error"]
    assert not errors
    assert _notebooks_snapshot() == before, "the notebook wrote into notebooks/"
    assert any(tmp_path.iterdir()), "the notebook wrote nothing into its temporary folder"


def test_weighting_notebook_shows_a_suite_reports_intervals_and_curves(tmp_path, monkeypatch):
    import json

    from medmtl.experiments.report import plot_comparisons

    report = tmp_path / "OUT" / "report"
    comparison = {"setting": "table2.ITW2", "reference": "table2.static-1", "task": "nodule_malignancy", "metric": "auc",
                  "diff": 0.031, "lo": 0.004, "hi": 0.058, "seed_lo": 0.002, "seed_hi": 0.060, "level": 0.95,
                  "verdict": "better", "seeds": ["0", "1", "2"]}
    rows = [{"name": "table2.ITW2", "nodule_malignancy/auc": 0.84}, {"name": "table2.static-1", "nodule_malignancy/auc": 0.81}]
    (report / "plots").mkdir(parents=True)
    point = {"fraction": 0.1, "key": "auc", "single": {"stats": [0.61, 0.02]}, "multi": {"stats": [0.70, 0.03]},
             "comparison": {**comparison, "diff": 0.09, "lo": -0.01, "hi": 0.19, "seed_lo": float("nan"),
                            "seed_hi": float("nan"), "verdict": "not distinguishable", "seeds": ["0"]}}
    (report / "results.json").write_text(json.dumps({"rows": rows, "comparisons": [comparison], "scarcity": [point]}))
    forest = plot_comparisons([comparison], report / "plots" / "comparisons.png")
    for name in ("learning_curves_nodule_malignancy.png", "scarcity_nodule_malignancy.png"):
        (report / "plots" / name).write_bytes(forest.read_bytes())

    path = REPO / "notebooks" / "03_weighting_strategies.ipynb"
    nb = _execute(path, tmp_path, monkeypatch, env={"MEDMTL_EXPERIMENT_TABLE": str(report / "results.json")})
    outputs = nb.cells[-1].outputs
    printed = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert "table2.ITW2 - table2.static-1" in printed
    assert "+0.031 cases [+0.004, +0.058] seeds [+0.002, +0.060]  better  (seeds 0,1,2)" in printed
    multi_minus_single = "multi - single +0.090 cases [-0.010, +0.190] seeds: one  not distinguishable"
    assert f"10% of the labels: single 0.610, multi 0.700, {multi_minus_single}" in printed
    # the interval plot, the scarcity curve and the learning curves
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 3
