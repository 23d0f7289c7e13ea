"""rfprobe as a stranger gets it: the wheel built from this tree, installed into a fresh
virtual environment, imports and runs the demo from outside the repository; the wheel holds
every module, the typing marker, the license and the metadata a package index shows; and the
version has one source (`rfprobe.__version__`), which the changelog's newest entry names."""
from __future__ import annotations

import ast
import os
import pathlib
import re
import shutil
import subprocess
import sys
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _project() -> dict:
    tomllib = pytest.importorskip("tomllib")          # Python 3.11+
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _source_version() -> str:
    """`__version__` as written in rfprobe/__init__.py: a plain literal, so that setuptools
    reads it without importing rfprobe (and torch) at build time."""
    tree = ast.parse((ROOT / "rfprobe" / "__init__.py").read_text())
    found = [node.value.value for node in tree.body
             if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["__version__"]
             and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)]
    assert len(found) == 1, "rfprobe/__init__.py must assign __version__ once, to a string literal"
    return found[0]


def _run(args: list, cwd: pathlib.Path, timeout: float = 60) -> str:
    """Run a command with no PYTHONPATH (the source tree must not leak in) and return stdout;
    a failure shows both streams."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    env["PYTHONNOUSERSITE"] = "1"
    done = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, (f"{args} exited {done.returncode}\n--- stdout\n{done.stdout[-3000:]}"
                                  f"\n--- stderr\n{done.stderr[-3000:]}")
    return done.stdout


def test_the_version_has_one_source_and_the_changelog_names_it():
    version = _source_version()
    project = _project()
    assert "version" not in project["project"]
    assert "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "rfprobe.__version__"}
    import rfprobe
    assert rfprobe.__version__ == version
    headings = re.findall(r"^## (\S+)", (ROOT / "CHANGELOG.md").read_text(), flags=re.M)
    assert headings and headings[0] == version, headings


def test_the_license_file_matches_the_metadata():
    project = _project()["project"]
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "Copyright (c) 2026 rfprobe contributors" in text
    assert project["license"] == "MIT"
    # an SPDX expression and a License :: classifier together are an error for setuptools
    assert not [c for c in project["classifiers"] if c.startswith("License ::")]


@pytest.mark.slow
def test_the_wheel_installs_into_a_fresh_venv_and_runs(tmp_path):
    version = _source_version()
    # build from a copy, so the build leaves nothing (build/, *.egg-info) in the source tree
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "rfprobe", src / "rfprobe", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
          "--disable-pip-version-check", "-q", "-w", dist, src], cwd=tmp_path, timeout=120)
    [wheel] = dist.glob("rfprobe-*.whl")
    assert wheel.name.startswith(f"rfprobe-{version}-py3-none-any")

    # what the wheel holds: every module of the source tree, the typing marker, the license
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        metadata = z.read(f"rfprobe-{version}.dist-info/METADATA").decode()
    modules = {p.relative_to(src).as_posix() for p in (src / "rfprobe").rglob("*.py")}
    assert modules <= names, sorted(modules - names)
    for package in ("rfprobe/ops", "rfprobe/trace", "rfprobe/routes", "rfprobe/render"):
        assert f"{package}/__init__.py" in names, package
    assert "rfprobe/py.typed" in names
    assert f"rfprobe-{version}.dist-info/licenses/LICENSE" in names
    assert not [n for n in names if n.startswith(("tests/", "bench/", "notebooks/", "docs/"))]
    fields = metadata.split("\n\n", 1)[0].splitlines()
    assert f"Version: {version}" in fields
    assert "License-Expression: MIT" in fields
    assert "Author: rfprobe contributors" in fields
    assert [f for f in fields if re.match(r"Requires-Dist: torch\b", f)], fields
    assert "Classifier: Typing :: Typed" in fields

    # a fresh venv that sees this interpreter's torch and numpy through a .pth file (torch is
    # not downloaded again), with the wheel installed and nothing else of rfprobe's
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp_path)
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    site = pathlib.Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             cwd=tmp_path).strip())
    import torch
    (site / "_parent.pth").write_text(str(pathlib.Path(torch.__file__).resolve().parent.parent) + "\n")
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index",
          "--disable-pip-version-check", "-q", wheel], cwd=tmp_path, timeout=120)

    # run from a directory outside the repository, so the source tree cannot be imported
    away = tmp_path / "elsewhere"
    away.mkdir()
    out = _run([python, "-c", "import importlib.metadata as m, rfprobe; "
                "print(rfprobe.__version__); print(m.version('rfprobe')); print(rfprobe.__file__)"], cwd=away)
    got, meta_version, where = out.split("\n")[:3]
    assert got == version and meta_version == version
    assert pathlib.Path(where).resolve().is_relative_to(site.resolve()), where
    if (ROOT / "rfprobe" / "__main__.py").exists():
        demo = [python, "-m", "rfprobe"]
    else:
        demo = [python, "-c", "from rfprobe.cli import main; raise SystemExit(main([]))"]
    assert _run(demo, cwd=away).strip()
