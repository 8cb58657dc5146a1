import pathlib

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = pathlib.Path(__file__).resolve().parents[1] / "notebooks"


def test_quickstart_runs(tmp_path):
    notebook = nbformat.read(NOTEBOOKS / "quickstart.ipynb", as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any(o.output_type == "display_data" and "image/png" in o.get("data", {}) for o in outputs)
    assert any("text/html" in o.get("data", {}) and "<audio" in o["data"]["text/html"] for o in outputs if "data" in o)


@pytest.mark.heavy
def test_training_notebook_trains_plots_and_cleans(tmp_path, monkeypatch):
    """Compiles, trains and evaluates a small t-UNet (22-34 s with a cold compile cache: heavy, as
    the same training runs from the command line in ``tests/test_train.py``), then removes its
    temporary folder: nothing is left in the kernel's TMPDIR."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    notebook = nbformat.read(NOTEBOOKS / "training.ipynb", as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    assert not list(scratch.iterdir())
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any(o.output_type == "display_data" and "image/png" in o.get("data", {}) for o in outputs)
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "sdr out" in text and "flute.flac" in text


# Heavy: 25 s on a 2-core AVX2 machine (2026-12-07); its fit, analysis and gradient run in the
# default run in tests/test_bleed_fit.py, tests/test_analyze.py and tests/test_bleed_model.py.
@pytest.mark.heavy
def test_differentiable_bleed_runs(tmp_path):
    notebook = nbformat.read(NOTEBOOKS / "differentiable_bleed.ipynb", as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    assert sum(o.output_type == "display_data" and "image/png" in o.get("data", {}) for o in outputs) >= 3
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "recovered distance" in text and "jax.grad" in text
