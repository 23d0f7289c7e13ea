"""Every notebook in notebooks/ runs top to bottom without error (so none can rot).

The kernel is this interpreter (``sys.executable``, the project's venv) through a kernel spec
written for the test, whatever kernels the machine has installed. The notebooks assert their
own claims against hand formulas, so a wrong number fails here too.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


def test_the_notebooks_are_there_and_stored_without_outputs():
    assert [p.stem for p in NOTEBOOKS] == ["01_why_3x3", "02_real_models", "03_effective_rf"]
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert code and all(not c.outputs and c.execution_count is None for c in code), path.name


@pytest.fixture(scope="module")
def kernel_specs(tmp_path_factory):
    from jupyter_client.kernelspec import KernelSpecManager
    root = tmp_path_factory.mktemp("kernels")
    spec = root / "rfprobe-venv"
    spec.mkdir()
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "rfprobe venv", "language": "python",
        "env": {"MPLBACKEND": "module://matplotlib_inline.backend_inline"}}))
    return KernelSpecManager(kernel_dirs=[str(root)])


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, kernel_specs):
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient
    km = KernelManager(kernel_name="rfprobe-venv", kernel_spec_manager=kernel_specs)
    assert km.kernel_spec.argv[0] == sys.executable
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, km=km, timeout=600, resources={"metadata": {"path": str(path.parent)}})
    start = time.monotonic()
    client.execute()
    seconds = time.monotonic() - start
    print(f"{path.name}: {seconds:.1f}s")
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if "image/png" in o.get("data", {})]
    assert images, f"{path.name} shows no picture"
