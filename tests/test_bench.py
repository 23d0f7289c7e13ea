"""The benchmark scripts still run and still say their results are exact (smoke tests: one
small model each, one repetition; no time is asserted, only that every ratio is a number)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")


def _run(script: str, *args: str) -> list[list[str]]:
    """Run a bench script; the cells of every markdown table row it printed (header rows
    included: callers look rows up by their first cell)."""
    env = dict(os.environ, BENCH_THREADS="1")
    done = subprocess.run([sys.executable, os.path.join(BENCH, script), *args], capture_output=True,
                          text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return [[c.strip() for c in line.strip().strip("|").split("|")]
            for line in done.stdout.splitlines() if line.startswith("| ") and not line.startswith("|---")]


def _row(rows: list[list[str]], first: str, header_has: str) -> dict[str, str]:
    """The row whose first cell is ``first``, under the last header that has ``header_has``."""
    header = None
    for cells in rows:
        if header_has in cells:
            header = cells
        elif header is not None and cells[0] == first:
            return dict(zip(header, cells))
    raise AssertionError(f"no row {first!r} under a header with {header_has!r} in {rows}")


@pytest.mark.slow
def test_probe_bench_runs_and_is_exact():
    rows = _run("run.py", "--only", "conv3x20", "--reps", "1")
    row = _row(rows, "conv3x20", "exact")
    assert row["exact"] == "yes" and row["<= 1.25 RF + stride"] == "yes", row
    float(row["probe / floor"])


@pytest.mark.slow
def test_analyze_zoo_bench_prints_ratios_and_floors():
    pytest.importorskip("torchvision")
    rows = _run("analyze_zoo.py", "--only", "alexnet", "--reps", "1")
    row = _row(rows, "alexnet", "floor / forward")
    assert row["status"] == "ok", row
    for key in ("analyze / forward", "floor / forward"):
        assert float(row[key]) > 0, row


@pytest.mark.slow
def test_trace_per_op_bench_prints_the_cost_of_one_traced_op():
    pytest.importorskip("torchvision")
    rows = _run("trace_per_op.py", "--only", "resnet50", "--reps", "1")
    row = _row(rows, "resnet50", "trace / floor")
    assert int(row["nodes"]) > 100, row
    for key in ("us/op (trace)", "trace / floor"):
        assert float(row[key]) > 0, row
