"""The ``rfprobe`` command: demo, verify, table, compare; --json; exit codes 0/1/2.

In-process through ``rfprobe.cli.main(argv)`` (fast), plus one run of the installed script.
Expected numbers by hand: conv3/s2 then conv3 is 3 + 2*2 = 7 with stride 2; conv3 conv3 is 5.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from rfprobe.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_demo(capsys):
    code, out, err = run(capsys)
    assert code == 0 and err == ""
    rows = {line.split("  ")[0].strip(): line.split() for line in out.splitlines() if line[:4] == "conv"}
    # spec -> RF and weights per channel pair (k*k per conv, by hand)
    assert rows["conv5"][1:3] == ["5x5", "25"]
    assert rows["conv3 relu conv3"][-3:] == ["5x5", "18", "agree"]
    assert rows["conv7"][1:3] == ["7x7", "49"]
    assert rows["conv3 relu conv3 relu conv3"][-3:] == ["7x7", "27", "agree"]
    assert rows["conv3/s2 relu conv3"][-3:] == ["7x7", "18", "agree"]


def test_verify_ok_and_expectations(capsys):
    code, out, err = run(capsys, "verify", "conv3/s2 relu conv3", "--expect-size", "7")
    assert code == 0 and "OK: all routes agree, RF 7x7" in out and "layer  op" in out
    assert run(capsys, "verify", "conv3/s2 relu conv3", "--expect-size", "7,7", "--expect-stride", "2",
               "--expect-padding", "0")[0] == 0


def test_wrong_expectation_exits_1(capsys):
    code, out, err = run(capsys, "verify", "conv3 relu conv3", "--expect-size", "7")
    assert code == 1
    assert "expected size 7x7, got 5x5" in err
    code, _, err = run(capsys, "verify", "conv3/s2 conv3", "--expect-stride", "1,2")
    assert code == 1 and "expected stride 1x2, got 2x2" in err


def test_global_rf_fails_an_expectation(capsys, tmp_path, monkeypatch):
    # a spec is an architecture: built in eval mode, its BatchNorm is pointwise (RF 3 + 2 = 5)
    assert run(capsys, "verify", "conv3 bn conv3", "--expect-size", "5")[0] == 0
    # a model whose BatchNorm runs in training mode inside forward: the RF is global
    (tmp_path / "cli_global_models.py").write_text(textwrap.dedent("""
        import torch.nn as nn, torch.nn.functional as F
        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.a, self.b = nn.Conv2d(1, 2, 3), nn.Conv2d(2, 1, 3)
            def forward(self, x):
                return self.b(F.batch_norm(self.a(x), None, None, training=True))
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    code, out, err = run(capsys, "verify", "cli_global_models:Net", "--expect-size", "5")
    assert code == 1
    assert "global" in out and "expected size 5x5, but the receptive field is global" in err


def test_json_is_valid(capsys):
    code, out, _ = run(capsys, "verify", "conv3/d2 conv3", "--json")
    d = json.loads(out)
    assert code == 0 and d["ok"] is True
    assert d["size"] == [7, 7] and d["stride"] == [1, 1]           # 5 + 2, dilation 2 first
    assert d["closed_box"] == d["exact_box"] == d["probe_box"]
    assert d["analysis"]["layers"][0]["size"] == [5, 5]
    code, out, _ = run(capsys, "verify", "conv3", "--json", "--expect-size", "5")
    d = json.loads(out)
    assert code == 1 and d["ok"] is False and d["expectations_failed"]
    code, out, _ = run(capsys, "table", "conv3 conv3/s2", "--json")
    d = json.loads(out)
    assert code == 0 and d["size"] == [5, 5] and d["stride"] == [2, 2] and len(d["layers"]) == 2
    code, out, _ = run(capsys, "compare", "conv5", "conv3 relu conv3", "--json", "--channels", "4")
    rows = json.loads(out)
    assert code == 0 and [r["params_no_bias"] for r in rows] == [25 * 16, 18 * 16]
    assert [r["size"] for r in rows] == [[5, 5], [5, 5]]


def test_table(capsys):
    code, out, _ = run(capsys, "table", "conv3 conv3/s2 conv3", "--input", "1,16,16")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["layer", "op", "output", "size", "stride", "padding"]
    assert [l.split()[-3:] for l in lines[1:4]] == [["3x3", "1x1", "0x0"], ["5x5", "2x2", "0x0"],
                                                     ["9x9", "2x2", "0x0"]]
    assert "input (1, 16, 16)" in out
    code, out, _ = run(capsys, "table", "conv3 conv3", "--dims", "1")
    assert code == 0 and "RF 5, stride 1" in out


def test_compare(capsys):
    code, out, _ = run(capsys, "compare", "conv7", "conv3 relu conv3 relu conv3")
    assert code == 0
    rows = [l.split() for l in out.splitlines()]
    head = rows[0]
    conv7 = dict(zip(head, rows[1]))
    assert (conv7["stack"], conv7["RF"], conv7["weights"], conv7["params"]) == ("conv7", "7x7", "49", "50")
    three = rows[2][:5]                                  # 'conv3 relu conv3 relu conv3' is 5 words
    assert three == ["conv3", "relu", "conv3", "relu", "conv3"]
    assert rows[2][5:6] == ["7x7"] and "27" in rows[2] and "30" in rows[2]      # 27 weights + 3 biases


@pytest.mark.parametrize("argv", [
    ["verify", "conv3 rleu"],
    ["table", "cnov3"],
    ["compare", "conv3", "maxpool2/ciel"],
    ["verify", "conv3", "--input", "1,8,8", "--unit", "9,9"],     # the output is 6x6
    ["verify", "conv3", "--input", "3,x"],
    ["verify", "conv3", "--expect-size", "3,3,3"],
    ["verify", "no_such_module_xyz:net"],
    ["verify", "torch.nn:Conv2d"],                 # needs arguments: cannot make a model
    ["bogus"],
    ["verify"],
])
def test_bad_input_exits_2(capsys, argv):
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert "error" in err


def test_spec_typo_message(capsys):
    code, _, err = run(capsys, "verify", "conv3 rleu")
    assert code == 2
    assert err.strip() == ("rfprobe: error: spec token 1 'rleu': unknown layer. Did you mean 'relu'? "
                           "Valid layers: conv, convT, maxpool, avgpool, up, relu, gelu, silu, sigmoid, "
                           "tanh, id, bn.")


def test_help_exits_0(capsys):
    assert main(["--help"]) == 0
    assert "verify" in capsys.readouterr().out


def test_module_attr_model(capsys, tmp_path, monkeypatch):
    (tmp_path / "cli_user_models.py").write_text(textwrap.dedent("""
        import torch.nn as nn
        def stem():
            return nn.Sequential(nn.Conv2d(3, 8, 7, stride=2, padding=3), nn.ReLU(),
                                 nn.MaxPool2d(3, 2, 1))
        NET = stem()
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    # by hand: conv7/s2/p3 -> r 7, S 2, P 3; maxpool3/s2/p1 -> r 7 + 2*2 = 11, S 4, P 3 + 2 = 5
    code, out, err = run(capsys, "verify", "cli_user_models:stem", "--expect-size", "11",
                         "--expect-stride", "4", "--expect-padding", "5")
    assert code == 0, err
    import cli_user_models
    cli_user_models.NET.train()
    code, out, err = run(capsys, "table", "cli_user_models:NET")
    assert code == 0 and "RF 11x11, stride 4x4, padding 5x5" in out
    assert cli_user_models.NET.training                 # the user's object is not switched to eval


def test_installed_script():
    script = Path(sys.executable).with_name("rfprobe")
    if not script.exists():
        pytest.skip("the rfprobe script is not installed next to this python")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    ok = subprocess.run([str(script), "verify", "conv3/s2 relu conv3", "--expect-size", "7"],
                        capture_output=True, text=True, timeout=120, env=env)
    assert ok.returncode == 0, ok.stderr
    assert "OK: all routes agree, RF 7x7" in ok.stdout


@pytest.mark.parametrize("argv", [["verify"], ["frob"], ["verify", "conv3", "--dims", "x"],
                                  ["verify", "conv3", "--bogus"], ["compare"],
                                  ["verify", "conv3", "--in-channels", "0"],
                                  ["verify", "conv3", "--expect-stride", "-1"]])
def test_bad_command_lines_exit_2_with_one_line(argv, capsys):
    """argparse's own errors (missing or unknown arguments) are one line too, like every other
    bad input; --in-channels 0 is refused (it was taken as 1) and an impossible expectation is
    bad input (2), not a failed check (1)."""
    from rfprobe.cli import main
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("rfprobe"), err
