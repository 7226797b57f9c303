"""Host-device traffic in the training path without making Python wait for the GPU.

A blocking copy between the CPU and a CUDA device (``torch.tensor(list, device=cuda)``,
``.to(cuda)`` of a CPU tensor, ``.item()``) waits for every kernel queued before it
(``benchmarks/sync_points.py`` counts them per step). Small per-step values that start on the CPU
(object counts per image, image sizes) are copied with ``non_blocking=True`` instead: from pageable
memory CUDA stages the bytes before the call returns, so the source may be freed at once, and the
stream orders the copy before the kernels that read it. On the CPU every helper here is the plain
operation, so results there are bit-identical.
"""

import torch


def to_device(values, device, dtype=None):
    """``torch.tensor(values, dtype=dtype)`` on ``device``, copied without waiting for the device."""
    return torch.tensor(values, dtype=dtype).to(device, non_blocking=True)


def check_values(bad, message, summary):
    """Raise ValueError(message()) where the bool tensor ``bad`` has a True, as ``if bad.any()`` would.

    On the CPU it is that check. On a device reading the flag would wait for the GPU on every step,
    so the check is queued instead (``torch._assert_async`` with ``summary``, a fixed text: building
    ``message`` may read values): a bad value then stops the run with a device-side assertion.
    """
    if not _queued(bad):
        if bool(bad.any()):
            raise ValueError(message())
        return
    torch._assert_async(~bad.any(), f"sgg_plugins: {summary}")


def _queued(tensor):
    """Whether a check on ``tensor`` is queued on its device rather than read (benchmarks/sync_points.py
    makes it True to count a CPU run as a GPU run would go)."""
    return tensor.device.type != "cpu"
