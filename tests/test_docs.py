"""The design document runs: its Python blocks are executed in order, in one namespace, in a
temporary directory (the worked example of adding an op among them); and nothing a user or a
developer reads points outside the repository."""
from __future__ import annotations

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _python_blocks(path: pathlib.Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


def test_the_design_documents_python_blocks_run(tmp_path, monkeypatch):
    blocks = _python_blocks(ROOT / "docs" / "design.md")
    assert len(blocks) >= 4
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "design_md"}
    for i, block in enumerate(blocks):
        exec(compile(block, f"docs/design.md, python block {i + 1}", "exec"), namespace)
    from rfprobe.ops import OPS
    assert "logcumsumexp" not in OPS          # the example took its record out again


def test_the_worked_example_would_fail_with_a_wrong_rule(tmp_path, monkeypatch):
    """The example's check is not empty: a rule that reads only index j (pointwise) makes
    verify disagree with the probe."""
    import rfprobe
    from rfprobe.ops import OPS, Op, elementwise
    blocks = _python_blocks(ROOT / "docs" / "design.md")
    namespace: dict = {"__name__": "design_md"}
    exec(compile(blocks[1], "docs/design.md", "exec"), namespace)
    OPS["logcumsumexp"] = Op("logcumsumexp", elementwise)
    try:
        r = rfprobe.verify(namespace["Running"](), input_shape=(1, 8, 8), unit=(2, 3))
    finally:
        del OPS["logcumsumexp"]
    assert not r.ok


def test_nothing_points_outside_the_repository():
    files = [ROOT / "README.md", ROOT / "DEVELOPERS.md", *sorted((ROOT / "docs").glob("*.md")),
             *sorted((ROOT / "rfprobe").rglob("*.py"))]
    bad = [str(f.relative_to(ROOT)) for f in files if "../shared" in f.read_text()]
    assert bad == []


def test_readme_and_developers_point_at_the_design():
    for name in ("README.md", "DEVELOPERS.md"):
        assert "docs/design.md" in (ROOT / name).read_text(), name
