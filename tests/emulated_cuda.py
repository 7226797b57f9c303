"""CUDA tensors on a machine without a GPU, for tests of code whose failure is a device mix.

No device that a CPU-only PyTorch can create runs CUDA's kernels and their device checks: an index
on ``meta`` is read as CPU memory, and ``lazy`` tensors and FakeTensorMode accept mixed devices. So
inside :func:`emulated_cuda` a tensor "on cuda:0" is a wrapper holding CPU data that reports
``cuda:0``; every op runs on the CPU data, and the device rules ATen applies in CUDA kernels are
applied first, with ATen's messages:

- an index (``aten.index``, ``aten.index_put_``) must be on the CPU or on the indexed tensor's device
  (``check_indices_on_cpu_or_selfdevice`` in ATen's TensorAdvancedIndexing.cpp);
- any other op's tensors must share one device, except 0-dimensional CPU tensors (scalars) and the
  copies between devices (``_to_copy``, ``copy_``).

Results are on ``cuda:0`` when the op was given ``device=cuda`` or, without a ``device``, when one
of its tensors was; ``.to("cpu")`` / ``.cpu()`` give plain CPU tensors.
"""

import contextlib

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

CUDA = torch.device("cuda", 0)
INDEX_OPS = ("aten::index", "aten::index_put", "aten::index_put_", "aten::_index_put_impl_")
COPY_OPS = ("aten::_to_copy", "aten::copy_", "aten::lift_fresh")


class OnCuda(torch.Tensor):
    """CPU data that reports ``cuda:0``."""

    @staticmethod
    def __new__(cls, data):
        return torch.Tensor._make_wrapper_subclass(cls, data.shape, strides=data.stride(), dtype=data.dtype,
                                                   device=CUDA, storage_offset=data.storage_offset())

    def __init__(self, data):
        self.data_on_cpu = data

    def __repr__(self):
        return f"OnCuda({self.data_on_cpu})"

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        raise RuntimeError("an OnCuda tensor is only usable inside emulated_cuda()")


def _device(value):
    return CUDA if isinstance(value, OnCuda) else value.device


def _unwrap(value):
    return value.data_on_cpu if isinstance(value, OnCuda) else value


def _check_devices(func, args, kwargs):
    name = func._schema.name
    if name in COPY_OPS:
        return
    if name in INDEX_OPS:
        indexed, indices = args[0], args[1]
        for index in indices:
            if index is not None and index.device.type != "cpu" and _device(index) != _device(indexed):
                raise RuntimeError("indices should be either on cpu or on the same device as the indexed tensor "
                                   f"({_device(indexed)})")
        return
    tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
    devices = {str(_device(t)) for t in tensors if isinstance(t, OnCuda) or t.dim() > 0}
    if len(devices) > 1:
        raise RuntimeError("Expected all tensors to be on the same device, but found at least two devices, "
                           + " and ".join(sorted(devices)) + "!")


class EmulatedCudaMode(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        _check_devices(func, args, kwargs)
        inputs = tree_flatten((args, kwargs))[0]
        requested = kwargs.pop("device", None)
        if requested is not None:
            on_cuda = torch.device(requested).type == "cuda"
        else:
            on_cuda = any(isinstance(t, OnCuda) for t in inputs)
        if func._schema.name == "aten::copy_":  # a copy into a tensor stays where that tensor is
            on_cuda = isinstance(args[0], OnCuda)
        out = func(*tree_map(_unwrap, args), **tree_map(_unwrap, kwargs))
        by_data = {id(_unwrap(t)): t for t in inputs if isinstance(t, OnCuda)}

        def place(value):
            if not isinstance(value, torch.Tensor):
                return value
            if id(value) in by_data:  # an in-place op returns its own input
                return by_data[id(value)]
            return OnCuda(value) if on_cuda else value

        return tree_map(place, out)


@contextlib.contextmanager
def emulated_cuda():
    """Inside: ``device="cuda"`` makes :class:`OnCuda` tensors and ``torch.cuda`` needs no driver."""
    lazy_init, lift_cpu_only = torch.cuda._lazy_init, torch._C._only_lift_cpu_tensors()
    torch.cuda._lazy_init = lambda: None  # the factories' binding would initialise the driver first
    torch._C._set_only_lift_cpu_tensors(True)  # torch.tensor(..., device="cuda") lifts a CPU tensor
    torch._C._ensureCUDADeviceGuardSet()  # a no-op device guard where CUDA is absent (as FakeTensorMode)
    try:
        with EmulatedCudaMode():
            yield
    finally:
        torch.cuda._lazy_init = lazy_init
        torch._C._set_only_lift_cpu_tensors(lift_cpu_only)


def to_cuda(value):
    """``value`` (nested lists, tuples, dicts of tensors) with every CPU tensor on emulated ``cuda:0``."""
    return tree_map(lambda t: OnCuda(t) if isinstance(t, torch.Tensor) and not isinstance(t, OnCuda) else t, value)
