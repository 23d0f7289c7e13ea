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
from tests.models import usable_device


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
    """A failed expectation is the verdict, on stdout: it leads (expected against got), the table
    follows, and the last line is a FAIL; "OK" appears nowhere, although the routes agree.
    (It used to go to stderr after an "OK: all routes agree" on stdout.)"""
    code, out, err = run(capsys, "verify", "conv3 relu conv3", "--expect-size", "7")
    assert code == 1 and err == ""
    lines = out.splitlines()
    assert lines[0] == "expected size 7x7, got 5x5"
    assert lines[2].split() == ["layer", "op", "output", "size", "stride", "padding"]
    assert lines[-1] == "FAIL: expected size 7x7, got 5x5 (the routes agree, RF 5x5)"
    assert "OK" not in out
    code, out, _ = run(capsys, "verify", "conv3/s2 conv3", "--expect-stride", "1,2", "--expect-size", "7")
    assert code == 1 and out.splitlines()[0] == "expected stride 1x2, got 2x2" and "OK" not in out
    assert "expected size" not in out                        # 3 + 2*2 = 7 holds: only stride failed


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
    assert out.startswith("expected size 5x5, but the receptive field is global") and "OK" not in out


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
    d = json.loads(out)                          # one object, as every outcome (was a bare list)
    rows = d["rows"]
    assert code == 0 == d["exit"] and d["ok"] is True
    assert [r["params_no_bias"] for r in rows] == [25 * 16, 18 * 16]
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


# ----------------------------------------------------------------------------- adoptable by a stranger
def _tree_env() -> dict:
    """The environment of a subprocess that finds this checkout's rfprobe (and nothing else new)."""
    import rfprobe
    root = str(Path(rfprobe.__file__).resolve().parent.parent)
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    return dict(os.environ, PYTHONPATH=path, OMP_NUM_THREADS="1")


STEM = textwrap.dedent("""
    import torch.nn as nn
    class UNet(nn.Module):                       # conv3/s2 then conv3: 3 + 2*2 = 7, stride 2
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(1, 2, 3, stride=2), nn.Conv2d(2, 1, 3)
        def forward(self, x):
            return self.b(self.a(x))
    def resnet50():
        return UNet()
""")


def test_module_attr_is_imported_from_the_current_directory(capsys, tmp_path, monkeypatch):
    """`rfprobe verify models:UNet` in the user's folder, without PYTHONPATH: the cwd is first on
    sys.path while the model is loaded, as `python -m` would have it, and leaves afterwards."""
    (tmp_path / "cwd_models_a.py").write_text(STEM)
    here = {"", ".", os.getcwd(), str(tmp_path)}
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in here])   # as the installed script
    monkeypatch.chdir(tmp_path)
    before = list(sys.path)
    code, out, err = run(capsys, "verify", "cwd_models_a:UNet", "--expect-size", "7", "--expect-stride", "2")
    assert code == 0, err
    assert sys.path == before                                  # restored
    sys.modules.pop("cwd_models_a", None)


def test_python_dash_m_runs_the_cli_from_the_users_folder(tmp_path):
    """`python -m rfprobe` is the command; with -P (no cwd on sys.path, as the installed script)
    the model is still found in the current directory. --version prints rfprobe <version>."""
    import rfprobe
    (tmp_path / "cwd_models_b.py").write_text(STEM)
    common = dict(capture_output=True, text=True, timeout=120, env=_tree_env(), cwd=tmp_path)
    v = subprocess.run([sys.executable, "-P", "-m", "rfprobe", "--version"], **common)
    assert v.returncode == 0 and v.stdout.strip() == f"rfprobe {rfprobe.__version__}", v.stderr
    ok = subprocess.run([sys.executable, "-P", "-m", "rfprobe", "verify", "cwd_models_b:UNet",
                         "--expect-size", "7"], **common)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines()[-1] == "OK: all routes agree, RF 7x7"


def test_version(capsys):
    import rfprobe
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"rfprobe {rfprobe.__version__}"


def test_did_you_mean_for_module_attributes(capsys, tmp_path, monkeypatch):
    (tmp_path / "cwd_models_c.py").write_text(STEM)
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "verify", "cwd_models_c:resnet5O")
    assert code == 2 and out == ""
    assert err.strip() == "rfprobe: error: 'cwd_models_c' has no attribute 'resnet5O'. Did you mean 'resnet50'?"
    code, out, err = run(capsys, "table", "torch.nn:Conv2D")
    assert code == 2 and "Did you mean 'Conv2d'?" in err
    sys.modules.pop("cwd_models_c", None)


def test_unit_as_one_int_is_that_index_on_every_axis(capsys):
    """conv3/s2 conv3 on 11x11: 5x5 then 3x3 outputs; RF 7, stride 2. By hand, unit (i, i) sees
    rows and columns 2i..2i+6: --unit 0 -> 0..6, --unit -1 (that is 2) -> 4..10."""
    for unit, box, index in (("0", [0, 6], 0), ("-1", [4, 10], 2), ("1,0", None, None)):
        code, out, err = run(capsys, "verify", "conv3/s2 conv3", "--input", "1,11,11", "--unit", unit, "--json")
        d = json.loads(out)
        assert code == 0 and d["ok"], err
        if box is None:
            assert d["unit"] == [1, 0] and d["probe_box"] == [[2, 8], [0, 6]]
        else:
            assert d["unit"] == [index, index] and d["probe_box"] == d["exact_box"] == [box, box]


def test_every_argument_has_help():
    """Walk the parser: every option and positional of every subcommand says what it is."""
    import argparse
    from rfprobe.cli import make_parser
    seen = 0
    todo = [make_parser()]
    while todo:
        parser = todo.pop()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                todo.extend(action.choices.values())
                assert all(c.help for c in action._choices_actions), parser.prog
                continue
            assert action.help and action.help != argparse.SUPPRESS, (parser.prog, action.dest)
            seen += 1
    assert seen >= 25                     # 4 parsers: the walk did reach the subcommands


BAD_JSON = [
    (["verify", "--json"], "ArgumentError", "required: model"),                 # argparse: missing
    (["verify", "conv3", "--bogus", "--json"], "ArgumentError", "--bogus"),      # argparse: unknown
    (["frob", "--json"], "ArgumentError", "invalid choice"),
    (["verify", "conv3", "--dims", "x", "--json"], "ArgumentError", "--dims"),
    (["verify", "conv3 rleu", "--json"], "SpecError", "Did you mean 'relu'?"),
    (["verify", "conv3", "--input", "3,x", "--json"], "ArgumentError", "--input '3,x'"),
    (["verify", "conv3", "--expect-size", "3,3,3", "--json"], "ArgumentError", "give 1 or 2"),
    (["verify", "conv3", "--input", "1,8,8", "--unit", "9,9", "--json"], "ArgumentError", "out of range"),
    (["verify", "no_such_module_xyz:net", "--json"], "ArgumentError", "No module named 'no_such_module_xyz'"),
    (["verify", "cwd_models_broken:Net", "--json"], "ModelError", "NameError"),
    (["table", "torch.nn:Conv2d", "--json"], "ArgumentError", "not an nn.Module"),
    (["compare", "conv3", "maxpool2/ciel", "--json"], "SpecError", "ciel"),
]


@pytest.mark.parametrize("argv, kind, words", BAD_JSON)
def test_json_errors_are_one_json_object(argv, kind, words, capsys, tmp_path, monkeypatch):
    (tmp_path / "cwd_models_broken.py").write_text("import torch.nn\nclass Net(nn.Module): pass\n")
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, *argv)
    d = json.loads(out)                                    # the whole of stdout is one object
    assert code == 2 and d["exit"] == 2 and d["ok"] is False
    assert set(d) == {"ok", "error", "exit"} and d["error"]["type"] == kind
    assert words in d["error"]["message"], d
    sys.modules.pop("cwd_models_broken", None)


def test_json_outcomes_carry_ok_and_exit(capsys):
    for argv, code in ((["verify", "conv3 conv3", "--json"], 0), (["verify", "conv3", "--json", "--expect-size", "5"], 1),
                       (["table", "conv3", "--json"], 0), (["compare", "conv3", "--json"], 0)):
        got, out, _ = run(capsys, *argv)
        d = json.loads(out)
        assert got == code == d["exit"] and d["ok"] is (code == 0), argv
    got, out, _ = run(capsys, "verify", "conv3", "--js")          # argparse takes it for --json
    assert got == 0 and json.loads(out)["size"] == [3, 3]
    got, out, _ = run(capsys, "verify", "--help", "--json")
    d = json.loads(out)
    assert got == 0 == d["exit"] and "--expect-size" in d["output"]


def test_a_module_that_raises_on_import_is_bad_input(capsys, tmp_path, monkeypatch):
    """The user's module was found but its code raised: a ModelError naming it, exit 2, one line."""
    (tmp_path / "cwd_models_raises.py").write_text("import no_such_dependency_xyz\n")
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "verify", "cwd_models_raises:Net")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "importing 'cwd_models_raises' (for 'cwd_models_raises:Net') raised ModuleNotFoundError" in err


def test_json_stdout_is_only_the_object_when_the_model_prints(capsys, tmp_path, monkeypatch):
    """A model that prints in forward: with --json its words go to stderr, stdout stays one object."""
    (tmp_path / "cwd_models_chatty.py").write_text(textwrap.dedent("""
        import torch.nn as nn
        class Net(nn.Conv2d):
            def __init__(self):
                super().__init__(1, 1, 3)
            def forward(self, x):
                print("shape", tuple(x.shape))
                return super().forward(x)
    """))
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "verify", "cwd_models_chatty:Net", "--json")
    assert code == 0 and json.loads(out)["size"] == [3, 3] and "shape (1, 1," in err
    sys.modules.pop("cwd_models_chatty", None)


# ----------------------------------------------------------------------------- --device, compare --input, advice
def test_verify_takes_a_device(capsys):
    """--device runs the probe there; one this torch cannot use is bad input (2), said in the
    command line's words, as one line (torch's own error for 'mps' was 7,777 characters)."""
    code, out, err = run(capsys, "verify", "conv3 relu conv3", "--device", "cpu", "--expect-size", "5")
    assert code == 0 and out.splitlines()[-1] == "OK: all routes agree, RF 5x5", err
    absent = next(d for d in ("mps", "xpu", "hpu") if not usable_device(d))
    for argv in ([absent], ["cuda:x"], ["gpu"]):
        code, out, err = run(capsys, "verify", "conv3", "--device", *argv)
        assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
        assert err.startswith(f"rfprobe: error: --device {argv[0]} ") and "--device cpu" in err, err
        assert "device=" not in err and "None" not in err, err
    code, out, _ = run(capsys, "verify", "conv3", "--device", absent, "--json")
    d = json.loads(out)
    assert code == 2 and d["error"]["message"].startswith(f"--device {absent} is not available here")


def test_compare_takes_an_input(capsys):
    """--input gives each stack's total MACs for that input, by hand for one channel on 32x32:
    conv5 -> 28x28 outputs of 25 MACs = 19600; conv3 relu conv3 -> 30x30 of 9 then 28x28 of 9 =
    8100 + 7056 = 15156. H,W and C,H,W (C = --channels) are the same input."""
    for given in ("32,32", "1,32,32"):
        code, out, _ = run(capsys, "compare", "conv5", "conv3 relu conv3", "--input", given, "--json")
        d = json.loads(out)
        assert code == 0 and [r["macs"] for r in d["rows"]] == [19600, 15156], d
    code, out, _ = run(capsys, "compare", "conv5", "conv3 relu conv3", "--input", "32,32")
    assert code == 0 and "19600" in out and "15156" in out and "MACs for an input of (1, 32, 32)" in out
    code, _, err = run(capsys, "compare", "conv5", "--input", "32,x")
    assert code == 2 and "--input '32,x'" in err


# a classifier whose trunk ends in a 1x1 map at the 32x32 input rfprobe tries first, where the
# adaptive pool after it is the identity (local): the advice must still name the trunk
ADVICE = textwrap.dedent("""
    import torch.nn as nn
    class Classifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.trunk = nn.Sequential(nn.Conv2d(1, 4, 4, stride=4), nn.ReLU(), nn.Conv2d(4, 4, 8, stride=8),
                                       nn.ReLU())
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(4, 2)
        def forward(self, x):
            return self.fc(self.pool(self.trunk(x)).flatten(1))
    class Pooled(Classifier):
        def forward(self, x):
            return self.pool(self.trunk(x))
""")


def test_the_advice_is_in_the_command_lines_words_and_names_the_trunk(capsys, tmp_path, monkeypatch):
    """A classifier's output has no spatial axes, a pooled map's RF is global: the advice names
    the trunk (the last module whose output has a local RF, read from the model's structure) as
    ``--layer trunk`` on the command line and ``layer='trunk'`` in Python; and --layer trunk
    then gives the trunk's RF, by hand 4 + (8 - 1)*4 = 32 with stride 32."""
    (tmp_path / "cwd_models_advice.py").write_text(ADVICE)
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "verify", "cwd_models_advice:Classifier")
    assert code == 2 and err.strip() == (
        "rfprobe: error: the selected output 'fc' has shape (1, 2) without spatial axes: op 'flatten' (node "
        "'flatten#0') lost them (flatten merges or splits spatial axes (1, 4, 1, 1) -> (1, 4) (every position can "
        "reach every output)); choose a conv feature map with --layer NAME (e.g. --layer trunk, the last module "
        "whose output has a local RF)")
    for cmd in ("verify", "table"):         # at 64x64 the pool reads a 2x2 map: global
        code, out, err = run(capsys, cmd, "cwd_models_advice:Pooled", "--input", "1,64,64")
        assert code == 0 and ("advice: for a local RF select an earlier output with --layer trunk (the last "
                              "module whose output has a local RF)") in out.splitlines(), out
        assert "layer=" not in out + err
    code, out, _ = run(capsys, "verify", "cwd_models_advice:Pooled", "--layer", "trunk", "--expect-size", "32",
                       "--expect-stride", "32")
    assert code == 0, out
    code, out, _ = run(capsys, "verify", "cwd_models_advice:Pooled", "--input", "1,64,64", "--json")
    assert json.loads(out)["analysis"]["suggested_layer"] == "trunk"

    import rfprobe
    from cwd_models_advice import Classifier, Pooled
    with pytest.raises(rfprobe.ArgumentError) as info:
        rfprobe.analyze(Classifier())
    assert str(info.value).endswith("with layer=... (e.g. layer='trunk', the last module whose output has a "
                                    "local RF)") and "--layer" not in str(info.value)
    r = rfprobe.verify(Pooled(), (1, 64, 64))
    assert r.analysis.suggested_layer == "trunk" and "--layer" not in str(r)
    assert ("advice: for a local RF select an earlier output with layer='trunk' (the last module whose output "
            "has a local RF)") in str(r).splitlines()
    assert "layer=&#x27;trunk&#x27;" in r.analysis._repr_html_()
    assert rfprobe.analyze(Pooled(), (1, 64, 64), layer="trunk").suggested_layer is None    # local: no advice
    sys.modules.pop("cwd_models_advice", None)


@pytest.mark.slow
def test_the_advice_for_a_torchvision_resnet50_names_layer4(capsys):
    """The advice a new user met (``layer=... (e.g. the trunk)``): for torchvision's resnet50 it
    names its trunk, layer4, read from the structure (avgpool and fc follow it)."""
    code, out, err = run(capsys, "verify", "torchvision.models:resnet50")
    assert code == 2 and "choose a conv feature map with --layer NAME (e.g. --layer layer4," in err, err


def test_output_selects_a_key_and_negative_units_need_no_equals_sign(capsys, tmp_path, monkeypatch):
    (tmp_path / "cli_heads.py").write_text(textwrap.dedent("""
        import torch.nn as nn
        class TwoHeads(nn.Module):
            def __init__(self):
                super().__init__()
                self.a = nn.Conv2d(1, 1, 3)
                self.b = nn.Conv2d(1, 1, 7)
            def forward(self, x):
                return {"small": self.a(x), "big": self.b(x)}
        class Pair(TwoHeads):
            def forward(self, x):
                return self.a(x), self.b(x)
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    # by hand: the 3x3 head reads 3x3, the 7x7 head 7x7; unit -1 of the 14x14 map reads 13..15
    code, out, err = run(capsys, "verify", "cli_heads:TwoHeads", "--input", "1,16,16", "--output", "small",
                         "--unit", "-1,-1", "--expect-size", "3")
    assert code == 0 and "((13, 15), (13, 15))" in out, err
    code, out, err = run(capsys, "table", "cli_heads:TwoHeads", "--input", "1,16,16", "--output", "big")
    assert code == 0 and "RF 7x7" in out and "output='big'" in out
    code, out, err = run(capsys, "table", "cli_heads:Pair", "--input", "1,16,16", "--output", "1")
    assert code == 0 and "RF 7x7" in out
    code, out, err = run(capsys, "table", "cli_heads:TwoHeads", "--input", "1,16,16", "--output", "bgi")
    assert code == 2 and "Did you mean 'big'" in err
