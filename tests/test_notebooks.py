"""Every notebook in notebooks/ runs top to bottom without error (so none can rot), and is
stored with its outputs (tables and pictures show on a repository viewer) by the one command
``python notebooks/sync.py``, whose functions run them here too.

The kernel is this interpreter (``sys.executable``, the project's venv) through a kernel spec
written for the test, whatever kernels the machine has installed. The notebooks assert their
own claims against hand formulas, so a wrong number fails here too. Outputs are executed, not
compared: the stored ones only have to exist and be free of errors.
"""
from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

FOLDER = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(FOLDER.glob("*.ipynb"))


def _sync():
    spec = importlib.util.spec_from_file_location("notebooks_sync", FOLDER / "sync.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _outputs(nb):
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]


def _pictures(nb):
    return [o for o in _outputs(nb) if "image/png" in o.get("data", {})]


def test_the_notebooks_are_stored_with_their_outputs():
    assert [p.stem for p in NOTEBOOKS] == ["01_why_3x3", "02_real_models", "03_effective_rf"]
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert code and all(c.execution_count is not None for c in code), f"{path.name}: run notebooks/sync.py"
        assert _pictures(nb), f"{path.name} is stored without a picture"
        assert not [o for o in _outputs(nb) if o.output_type == "error"], path.name
        assert "kernelspec" not in nb.metadata          # sync.py drops what changes on every run


@pytest.fixture(scope="module")
def kernel_specs(tmp_path_factory):
    return _sync().kernel_specs(tmp_path_factory.mktemp("kernels"))


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, kernel_specs):
    assert kernel_specs.get_kernel_spec(_sync().KERNEL).argv[0] == sys.executable
    start = time.monotonic()
    nb = _sync().execute(path, kernel_specs)
    print(f"{path.name}: {time.monotonic() - start:.1f}s")
    assert not [o for o in _outputs(nb) if o.output_type == "error"]
    assert _pictures(nb), f"{path.name} shows no picture"
