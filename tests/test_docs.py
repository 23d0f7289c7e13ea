"""The design document runs: its Python blocks are executed in order, in one namespace, in a
temporary directory (the worked example of adding an op among them); and nothing a user or a
developer reads points outside the repository."""
from __future__ import annotations

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _python_blocks(path: pathlib.Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


DOCS = sorted((ROOT / "docs").glob("*.md"))


@pytest.mark.parametrize("doc", DOCS, ids=[d.name for d in DOCS])
def test_the_python_blocks_of_each_document_run(doc, tmp_path, monkeypatch):
    """Each file's blocks in order, in one namespace, in a temporary directory; afterwards no
    rule a document registered is left behind."""
    from rfprobe.ops import user_rules
    blocks = _python_blocks(doc)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": doc.stem}
    for i, block in enumerate(blocks):
        exec(compile(block, f"{doc.relative_to(ROOT)}, python block {i + 1}", "exec"), namespace)
    assert user_rules() == frozenset()


def test_the_documents_have_code_to_run():
    assert len(_python_blocks(ROOT / "docs" / "design.md")) >= 4
    assert len(_python_blocks(ROOT / "docs" / "rules.md")) >= 4


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
