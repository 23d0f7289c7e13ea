"""Shared test set-up.

The suite runs many tiny tensor ops; with several intra-op threads on a small, busy CI machine
each op waits on thread barriers (measured here: a 279-long conv1d took 24 ms with 2 threads
under load, 0.013 ms with 1). One thread keeps the suite fast; set RFPROBE_TEST_THREADS to
override.
"""
import os

import torch

torch.set_num_threads(int(os.environ.get("RFPROBE_TEST_THREADS", "1")))
