"""No leaks: 200 consecutive probes of the same model do not grow memory, and leave no hooks,
modes or patched torch settings behind (also after calls that fail).

Memory is measured three ways after a warm-up (first calls fill caches: rules, dispatch tables,
allocator pools): Python allocations (``sys.getallocatedblocks``, as cheap as tracemalloc is
slow), the number of live tensors (gc), and the
process's resident set size, each with a tolerance far below what a leak of one input-sized
tensor per call would cost over 200 calls.
"""
from __future__ import annotations

import gc
import os
import sys

import pytest
import torch
import torch.nn as nn

import rfprobe
from rfprobe.errors import RFProbeError
from tests.snapshot import assert_settings_unchanged, assert_unchanged, global_settings, snapshot

N = 200


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(8, 8, 3, dilation=2), nn.Dropout(0.1)).eval()


def _live_tensors() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if issubclass(type(o), torch.Tensor))


def _rss() -> int:
    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc for RSS")
def test_200_probes_do_not_grow_memory():
    net = _net()
    before, settings = snapshot(net), global_settings()
    for _ in range(20):                                   # warm-up
        rfprobe.probe(net, input_shape=(3, 48, 48))
    tensors, rss = _live_tensors(), _rss()
    for i in range(N):
        e = rfprobe.probe(net, input_shape=(3, 48, 48))
        if i == 9:
            gc.collect()
            blocks = sys.getallocatedblocks()
    del e
    gc.collect()
    grown = sys.getallocatedblocks() - blocks
    # one 3x48x48 float32 input kept per call would be 200 * 27 KB = 5.5 MB
    assert grown < 2000, f"{grown} more Python memory blocks after {N - 10} more probes"
    assert _live_tensors() - tensors <= 2, f"{_live_tensors() - tensors} tensors outlived their probe"
    assert _rss() - rss < 48 * 2 ** 20, f"RSS grew by {(_rss() - rss) / 2 ** 20:.1f} MB over {N} probes"
    assert_unchanged(net, before, f"{N} probes")
    assert_settings_unchanged(settings, f"{N} probes")


def test_failing_calls_leave_nothing_behind():
    """Calls that raise (bad unit, user's forward raising mid-probe) leave no hooks, modes or
    settings, and no tensors, behind."""

    class Flaky(nn.Module):
        calls = 0

        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(3, 3, 3)

        def forward(self, x):
            type(self).calls += 1
            if x.device.type != "meta":
                raise RuntimeError("fails on real tensors")
            return self.c(x)

    net, flaky = _net(), Flaky()
    before, settings = snapshot(net), global_settings()
    rfprobe.probe(net)
    tensors = _live_tensors()
    for _ in range(50):
        with pytest.raises(RFProbeError):
            rfprobe.probe(net, unit=(999, 0), input_shape=(3, 16, 16))
        with pytest.raises(RFProbeError):
            rfprobe.probe(flaky)
    assert _live_tensors() - tensors <= 2
    assert_unchanged(net, before, "failing probes")
    assert_settings_unchanged(settings, "failing probes")
    assert not torch.nn.modules.module._global_forward_hooks


def test_verify_and_analyze_do_not_accumulate():
    net = _net()
    settings = global_settings()
    rfprobe.verify(net)
    rfprobe.analyze(net)
    tensors = _live_tensors()
    for _ in range(50):
        rfprobe.verify(net)
        rfprobe.analyze(net)
    assert _live_tensors() - tensors <= 2
    assert_settings_unchanged(settings, "verify and analyze")
