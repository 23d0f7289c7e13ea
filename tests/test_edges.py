"""Small edges a demanding user hits: a fractional size, a CLI piped into ``head``."""
import subprocess
import sys

import pytest

import rfprobe


def test_a_fractional_input_size_is_refused_not_truncated():
    net = rfprobe.build("conv3")
    with pytest.raises(rfprobe.RFProbeError, match="input_shape=.*8.5"):
        rfprobe.probe(net, input_shape=(1, 8.5, 8))
    # a whole float is a size: the probe runs on 8x8 and agrees with the 3x3 kernel
    assert rfprobe.probe(net, input_shape=(1, 8.0, 8)).size == (3, 3)


@pytest.mark.parametrize("entry, broken", [("main", False), ("_main", True)])
def test_cli_piped_into_a_reader_that_leaves_early_is_not_an_error(entry, broken):
    """`rfprobe verify ... --json | head -1`: no BrokenPipeError traceback, exit 0. The inner
    ``_main`` (without the guard) shows the traceback, so the check can fail."""
    script = (f"import sys; from rfprobe.cli import {entry}; sys.exit({entry}(['verify', "
              "'conv3 relu conv3', '--json']))")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()          # the reader leaves before rfprobe prints anything
    err = proc.stderr.read().decode()
    code = proc.wait(timeout=120)
    if broken:
        assert "BrokenPipeError" in err
    else:
        assert code == 0 and "Traceback" not in err and "BrokenPipeError" not in err, err
