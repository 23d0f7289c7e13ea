"""Shared test set-up.

The suite runs many tiny tensor ops; with several intra-op threads on a small, busy CI machine
each op waits on thread barriers (measured here: a 279-long conv1d took 24 ms with 2 threads
under load, 0.013 ms with 1). One thread per process keeps the suite fast (pytest-xdist runs
one process per core, ``-n auto`` in pyproject.toml); set RFPROBE_TEST_THREADS to override.

pytest-xdist's controller only hands tests out to its workers, so it does not import torch
(seconds of start-up before the first worker starts).
"""
import os


def pytest_configure(config):
    if config.getoption("numprocesses", None) and not hasattr(config, "workerinput"):
        return          # the xdist controller: no test runs here
    import torch
    torch.set_num_threads(int(os.environ.get("RFPROBE_TEST_THREADS", "1")))
