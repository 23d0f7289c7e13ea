"""Every notebook in notebooks/ runs top to bottom without error (so none can rot), and is
stored with its outputs (tables and pictures show on a repository viewer) by the one command
``python notebooks/sync.py``, whose functions run them here too.

The kernel is this interpreter (``sys.executable``, the project's venv) through a kernel spec
written for the test, whatever kernels the machine has installed, and imports this checkout's
rfprobe, whichever one the venv has installed. The notebooks assert their
own claims against hand formulas, so a wrong number fails here too. Text outputs are executed,
not compared (the stored ones only have to exist and be free of errors); pictures are compared
by their shape: each stored picture has the same figure (matplotlib's text for it, ``<Figure
size 900x360 with 4 Axes>``: its size in pixels and its number of axes, colour bars included)
and a PNG of the same width and height (within ``PNG_TOLERANCE``, for other font rasterisers)
as a fresh run's, so a stale picture, or one a change in ``rfprobe.plot`` has squashed, fails.
"""
from __future__ import annotations

import base64
import importlib.util
import os
import re
import struct
import sys
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

FOLDER = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(FOLDER.glob("*.ipynb"))
PNG_TOLERANCE = 0.03        # of a side: a squashed picture differs by far more (371 -> 184 rows)
FIGURE = re.compile(r"<Figure size \d+x\d+ with \d+ Axes>")


def _sync():
    spec = importlib.util.spec_from_file_location("notebooks_sync", FOLDER / "sync.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _outputs(nb):
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]


def _pictures(nb):
    return [o for o in _outputs(nb) if "image/png" in o.get("data", {})]


def _shapes(nb) -> list[tuple[int, str, tuple[int, int]]]:
    """Per picture: its cell, the figure's text (``<Figure size WxH with N Axes>``) and the
    PNG's width and height (from its header)."""
    shapes = []
    for i, cell in enumerate(nb.cells):
        for o in cell.get("outputs", []) if cell.cell_type == "code" else []:
            data = o.get("data", {})
            if "image/png" in data:
                png = base64.b64decode(data["image/png"])
                assert png[:8] == b"\x89PNG\r\n\x1a\n", f"cell {i}: not a PNG"
                shapes.append((i, data.get("text/plain", ""), struct.unpack(">II", png[16:24])))
    return shapes


def _compare_pictures(name: str, stored, fresh) -> None:
    """``stored`` and ``fresh`` (``_shapes`` of a notebook as stored and as run again) show the
    same figures in the same cells, each PNG's sides within ``PNG_TOLERANCE``."""
    assert [(c, t) for c, t, _ in stored] == [(c, t) for c, t, _ in fresh], (
        f"{name}: the stored pictures are not the figures a fresh run draws (cell, figure): "
        f"stored {[(c, t) for c, t, _ in stored]}, fresh {[(c, t) for c, t, _ in fresh]}; "
        "run notebooks/sync.py")
    for (cell, text, old), (_, _, new) in zip(stored, fresh):
        assert all(abs(a - b) <= PNG_TOLERANCE * b for a, b in zip(old, new)), (
            f"{name}, cell {cell} ({text}): the stored picture is {old[0]}x{old[1]} pixels, a "
            f"fresh run draws {new[0]}x{new[1]}; look at the fresh one, then run notebooks/sync.py")


def test_the_notebooks_are_stored_with_their_outputs():
    assert [p.stem for p in NOTEBOOKS] == ["01_why_3x3", "02_real_models", "03_effective_rf"]
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert code and all(c.execution_count is not None for c in code), f"{path.name}: run notebooks/sync.py"
        assert _pictures(nb), f"{path.name} is stored without a picture"
        # each picture says what figure it is, so a fresh run's can be compared with it
        assert all(FIGURE.fullmatch(t) for _, t, _ in _shapes(nb)), (path.name, _shapes(nb))
        assert not [o for o in _outputs(nb) if o.output_type == "error"], path.name
        assert "kernelspec" not in nb.metadata          # sync.py drops what changes on every run


@pytest.fixture(scope="module")
def kernel_specs(tmp_path_factory):
    return _sync().kernel_specs(tmp_path_factory.mktemp("kernels"))


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, kernel_specs):
    spec = kernel_specs.get_kernel_spec(_sync().KERNEL)
    assert spec.argv[0] == sys.executable
    assert spec.env["PYTHONPATH"].split(os.pathsep)[0] == str(FOLDER.parent)    # this checkout's rfprobe
    start = time.monotonic()
    nb = _sync().execute(path, kernel_specs)
    print(f"{path.name}: {time.monotonic() - start:.1f}s")
    assert not [o for o in _outputs(nb) if o.output_type == "error"]
    assert _pictures(nb), f"{path.name} shows no picture"
    _compare_pictures(path.name, _shapes(nbformat.read(path, as_version=4)), _shapes(nb))
