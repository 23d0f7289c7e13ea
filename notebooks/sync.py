"""Run every notebook in this folder top to bottom and store it with its outputs, so a
repository viewer shows the tables and pictures:

    python notebooks/sync.py            # all of them
    python notebooks/sync.py 02_real_models.ipynb

The kernel is this interpreter (a kernel spec written to a temporary folder), whatever
kernels the machine has, and imports the rfprobe of this checkout (its root first on the
kernel's path), whichever one the interpreter has installed; volatile metadata (timings, kernel names) is dropped so that a rerun
only changes what the code shows. tests/test_notebooks.py runs the notebooks the same way.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
KERNEL = "rfprobe-venv"


def kernel_specs(root: Path) -> KernelSpecManager:
    """A kernel spec for this interpreter under ``root`` (inline matplotlib, PNG pictures),
    importing this checkout's rfprobe (a venv shared by several checkouts has one installed)."""
    spec = root / KERNEL
    spec.mkdir(parents=True, exist_ok=True)
    path = os.pathsep.join([str(HERE.parent)] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "rfprobe venv", "language": "python",
        "env": {"MPLBACKEND": "module://matplotlib_inline.backend_inline", "PYTHONPATH": path}}))
    return KernelSpecManager(kernel_dirs=[str(root)])


def execute(path: Path, specs: KernelSpecManager, timeout: int = 600) -> nbformat.NotebookNode:
    """``path`` run top to bottom, with its outputs (the file is not written)."""
    km = KernelManager(kernel_name=KERNEL, kernel_spec_manager=specs)
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, km=km, timeout=timeout, resources={"metadata": {"path": str(path.parent)}}).execute()
    return nb


def tidy(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Drop what changes on every run without the code changing: timings, the kernel's name."""
    nb.metadata.pop("kernelspec", None)
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
    return nb


def main(names: list[str]) -> int:
    paths = [HERE / n for n in names] if names else sorted(HERE.glob("*.ipynb"))
    with tempfile.TemporaryDirectory() as root:
        specs = kernel_specs(Path(root))
        for path in paths:
            nb = tidy(execute(path, specs))
            nbformat.write(nb, path)
            print(f"{path.name}: stored with outputs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
