"""The documents run: the Python blocks of each docs/*.md and of the README are executed in
order, in one namespace, in a temporary directory (the worked example of adding an op among
them), and every ``>>>`` example passes as a doctest; docs/api.md names every public name, every
parameter and every result field; every relative link resolves, and nothing a user or a
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
    from tests.models import UNKNOWN_OP
    namespace: dict = {"__name__": "design_md"}
    exec(compile(_worked_example()[0], "docs/design.md", "exec"), namespace)
    with rfprobe.registered_rule(UNKNOWN_OP, "pointwise"):
        r = rfprobe.verify(namespace["Running"](), input_shape=(1, 8, 8), unit=(2, 3))
    assert not r.ok


def _worked_example() -> list[str]:
    """docs/design.md's blocks from the rule of section 9 on, up to its checks."""
    blocks = _python_blocks(ROOT / "docs" / "design.md")
    first = next(i for i, b in enumerate(blocks) if "def prefix(call" in b)
    last = next(i for i, b in enumerate(blocks) if "registered_rule(record.name" in b)
    return blocks[first:last + 1]


def test_the_worked_example_fails_loudly_once_its_op_is_known(tmp_path, monkeypatch):
    """Had rfprobe a record for the example's op, the example would check nothing about adding
    one: it must fail then, not pass, whatever that record's rule. Shown with a rule declared
    for the run (the example looks at ``OPS``, where a shipped record would sit too)."""
    import rfprobe
    from tests.models import UNKNOWN_OP
    blocks = _worked_example()
    assert len(blocks) == 3
    monkeypatch.chdir(tmp_path)
    for rule in ("global", "pointwise"):
        with rfprobe.registered_rule(UNKNOWN_OP, rule):
            namespace: dict = {"__name__": "design_md"}
            with pytest.raises(AssertionError, match="the example needs an op without one"):
                for i, block in enumerate(blocks):
                    exec(compile(block, f"docs/design.md, section 9, block {i + 1}", "exec"), namespace)


def test_nothing_points_outside_the_repository():
    files = [ROOT / "README.md", ROOT / "DEVELOPERS.md", *sorted((ROOT / "docs").glob("*.md")),
             *sorted((ROOT / "rfprobe").rglob("*.py"))]
    bad = [str(f.relative_to(ROOT)) for f in files if "../shared" in f.read_text()]
    assert bad == []


def test_readme_and_developers_point_at_the_design():
    for name in ("README.md", "DEVELOPERS.md"):
        assert "docs/design.md" in (ROOT / name).read_text(), name


# ----------------------------------------------------------------------------- the API reference
def _public_functions() -> dict[str, object]:
    """Qualified name -> function, for every public function a user calls."""
    import inspect

    import rfprobe
    from rfprobe.testing import assert_receptive_field
    found = {f"rfprobe.{name}": getattr(rfprobe, name) for name in rfprobe.__all__
             if inspect.isfunction(inspect.unwrap(getattr(rfprobe, name)))}
    found["rfprobe.testing.assert_receptive_field"] = assert_receptive_field
    return found


def _sections(text: str) -> dict[str, str]:
    """Heading line -> the text up to the next heading (code blocks stripped of nothing)."""
    parts = re.split(r"^(#{1,6} .*)$", text, flags=re.M)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def _documented(section: str, name: str) -> bool:
    """``name`` appears as code in the section: `name`, `name=...`, `*name`, `**name`."""
    return re.search(rf"`\*{{0,2}}{re.escape(name)}(`|=|\()", section) is not None


def _undocumented(text: str) -> list[str]:
    import inspect
    import rfprobe
    missing = [name for name in rfprobe.__all__ if f"`{name}" not in text and f"rfprobe.{name}`" not in text]
    sections = _sections(text)
    for qualified, func in _public_functions().items():
        own = [body for head, body in sections.items() if f"`{qualified}`" in head]
        if not own:
            missing.append(f"{qualified} (no section headed `{qualified}`)")
            continue
        for param in inspect.signature(func).parameters:
            if not _documented(own[0], param):
                missing.append(f"{qualified}({param})")
    return missing


def test_the_api_reference_names_every_public_name_and_parameter():
    """Every name in rfprobe.__all__ appears in docs/api.md, and every parameter of every public
    function appears as code in that function's own section: a new parameter without docs fails."""
    assert _undocumented((ROOT / "docs" / "api.md").read_text()) == []


def test_the_api_reference_describes_the_results():
    """Every field, method and property of the result classes is named in docs/api.md."""
    import dataclasses

    import rfprobe
    text = (ROOT / "docs" / "api.md").read_text()
    missing = []
    for cls in (rfprobe.Analysis, rfprobe.ProbeResult, rfprobe.Report, rfprobe.ERF, rfprobe.Region,
                rfprobe.Cost, rfprobe.Comparison):
        names = {f.name for f in dataclasses.fields(cls)} | set(vars(cls))
        missing += [f"{cls.__name__}.{n}" for n in sorted(names)
                    if not n.startswith("_") and not _documented(text, n)]
    assert missing == []


def test_the_api_check_fails_on_an_undocumented_parameter():
    text = (ROOT / "docs" / "api.md").read_text()
    assert any(m == "rfprobe.probe(max_memory)" for m in _undocumented(text.replace("`max_memory`", "max memory")))


# ----------------------------------------------------------------------------- doctests
USER_DOCS = [ROOT / "README.md", *DOCS]


@pytest.mark.parametrize("doc", USER_DOCS, ids=[d.name for d in USER_DOCS])
def test_the_doctest_examples_of_each_document_pass(doc, tmp_path, monkeypatch):
    """Every ``>>>`` example runs as a doctest (code fences are blank lines to the parser, so an
    expected output may end at the fence)."""
    monkeypatch.chdir(tmp_path)
    assert _doctest_failures(doc.read_text(), doc.name) == ""


def _doctest_failures(text: str, name: str) -> str:
    """The doctest report of the ``>>>`` examples in a markdown text ('' when all pass)."""
    import doctest
    text = re.sub(r"^\s*```.*$", "", text, flags=re.M)
    test = doctest.DocTestParser().get_doctest(text, {}, name, name, 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    out: list[str] = []
    runner.run(test, out=out.append)
    return "".join(out) if runner.failures else ""


def test_the_reference_has_doctests_and_a_wrong_one_fails():
    assert "\n>>> " in (ROOT / "docs" / "api.md").read_text()
    assert _doctest_failures("```pycon\n>>> 1 + 1\n2\n```\n", "ok.md") == ""
    assert "Expected:" in _doctest_failures("```pycon\n>>> 1 + 1\n3\n```\n", "wrong.md")


# ----------------------------------------------------------------------------- links
LINKED = [ROOT / "README.md", ROOT / "DEVELOPERS.md", *DOCS]


def _broken_links(text: str, here: pathlib.Path) -> list[str]:
    """Relative targets in ``text`` (a file in folder ``here``) that do not exist: markdown
    links ``[text](path)`` (relative to the file; a ``#fragment`` is dropped, web addresses are
    skipped) and backticked repository paths that look like files (a ``/`` and a .md, .py or
    .ipynb suffix; relative to the repository root, the file's folder, or the package for the
    layout of ``rfprobe/`` that docs/design.md describes)."""
    prose = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    bad = []
    for target in re.findall(r"\[[^\]]*\]\(([^)\s]+)\)", prose):
        path = target.split("#")[0]
        if not path or re.match(r"[a-z]+:", path):
            continue
        if not (here / path).exists():
            bad.append(target)
    for path in re.findall(r"`([^`\s]+/[^`\s]*\.(?:md|py|ipynb))`", prose):
        if not any((base / path).exists() for base in (ROOT, here, ROOT / "rfprobe")):
            bad.append(path)
    return bad


@pytest.mark.parametrize("doc", LINKED, ids=[d.name for d in LINKED])
def test_every_relative_link_points_at_a_file(doc):
    assert _broken_links(doc.read_text(), doc.parent) == []


def test_the_link_check_finds_a_broken_link():
    text = ("See [the rules](docs/rules.md), [nowhere](docs/no_such_page.md#top), [web](https://x.org),\n"
            "`bench/no_such_bench.py`, `tests/test_docs.py` and `docs/rules.md`.\n")
    assert _broken_links(text, ROOT) == ["docs/no_such_page.md#top", "bench/no_such_bench.py"]


# ----------------------------------------------------------------------------- the README
def _runnable_blocks(path: pathlib.Path) -> list[str]:
    """The ```python blocks, except one right after a ``<!-- skip -->`` line."""
    return [code for skip, code in re.findall(r"(<!-- skip -->\s*\n)?```python\n(.*?)```", path.read_text(),
                                                flags=re.S) if not skip]


def test_the_readme_python_blocks_run(tmp_path, monkeypatch):
    """In order, in one namespace, in a temporary directory; no rule left registered."""
    import time

    import matplotlib

    import rfprobe
    from rfprobe.ops import user_rules
    matplotlib.use("Agg")
    monkeypatch.chdir(tmp_path)
    blocks = _runnable_blocks(ROOT / "README.md")
    assert len(blocks) >= 3
    namespace: dict = {"__name__": "readme"}
    start = time.perf_counter()
    for i, block in enumerate(blocks):
        try:
            exec(compile(block, f"README.md, python block {i + 1}", "exec"), namespace)
        finally:
            left = user_rules()
            for name in left:
                rfprobe.unregister_rule(name)
        assert left == frozenset(), f"README.md, python block {i + 1} leaves rules registered"
    assert time.perf_counter() - start < 60       # about 10 s on one core; mark slow blocks <!-- skip -->


def test_a_skip_comment_skips_the_next_block(tmp_path):
    doc = tmp_path / "x.md"
    doc.write_text("```python\na = 1\n```\n<!-- skip -->\n```python\nraise SystemExit\n```\n")
    assert _runnable_blocks(doc) == ["a = 1\n"]
