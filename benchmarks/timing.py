"""Timing shared by the micro-benchmarks (the loss-alone and compatibility-op timings)."""

import statistics
import time

import torch


def median_ms(step, repeats, device, warmup=2):
    """Median wall time of one call of ``step`` in ms, after ``warmup`` calls.

    The median shrugs off other processes on a shared CPU; CUDA work is synchronised around each call.
    """
    device = torch.device(device)
    times = []
    for index in range(warmup + repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if index >= warmup:
            times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)
