"""Run-time shims that let the unmodified SGTR host (its vendored cvpods) run on a current
PyTorch / NumPy / Pillow / Python, with or without a GPU.

``install_compat(host_root)`` runs before the host is imported and applies only the shims this
environment needs, each reported once on the ``sgg_plugins`` logger:

- ``numpy aliases``: ``np.float`` / ``np.bool`` (removed in NumPy 1.24) are used by the VG
  dataset's box filter, run for every training image when the statistics are built;
- ``PIL.Image.LINEAR``: removed in Pillow 10, a default argument evaluated when
  ``cvpods.data.transforms.transform`` is imported; it was always an alias of ``BILINEAR``;
- ``collections.Mapping``: removed in Python 3.10, imported by ``cvpods.evaluation.testing``;
- ``imp``: removed in Python 3.12, imported by ``cvpods.utils.imports`` (``find_module`` /
  ``load_module``, provided on importlib);
- ``torch.load for host files``: ``weights_only`` defaults to False again for loads made by host
  code (torch >= 2.6 made it True): the host reloads its own dataset-statistics cache and
  checkpoints with optimizer state. Every other caller keeps torch's safe default;
- ``.cuda() from host code``: without a GPU, ``.cuda()`` called from host code (the evaluator's
  ``boxlist_iou`` calls it unconditionally) returns the tensor or module unchanged;
- ``RelPostProcess indices``: on a GPU, the relation post-processor
  (``cvpods/modeling/meta_arch/one_stage_sgg/rel_detr_inference.py``) moves its triplets to the CPU
  and then indexes them with masks it left on the GPU, which current PyTorch refuses (an index must
  be on the CPU or on the indexed tensor's device; older releases accepted it). While that forward
  runs on a non-CPU device, such an index follows the indexed tensor to its device; nothing else
  changes.

Host code is code compiled from a file under the host checkout (``cvpods``, the experiment's
``net`` / ``modeling`` modules, the host's scripts).
"""

import collections
import collections.abc
import functools
import importlib.abc
import importlib.machinery
import importlib.util
import logging
import sys
import types

import torch
from torch.overrides import TorchFunctionMode

from ..common import apply_shims, called_from_files_under, install_numpy_aliases, missing_numpy_aliases

_applied = []
_host = {"root": None}


def called_from_host(depth=2):
    """Whether the code ``depth`` frames above this function (the caller of the shim that asks) is host code."""
    return called_from_files_under(_host["root"], depth)


# ----------------------------------------------------------------------------------------------
# removed library names


def _needs_pil_linear():
    from PIL import Image

    return not hasattr(Image, "LINEAR")


def _install_pil_linear():
    from PIL import Image

    Image.LINEAR = Image.BILINEAR  # Pillow defined LINEAR = BILINEAR until it removed the alias
    return "= Image.BILINEAR"


def _install_collections_mapping():
    collections.Mapping = collections.abc.Mapping


def find_module(name, path=None):
    """``imp.find_module`` for source modules: ``(open file, path, ('.py', 'r', PY_SOURCE))``."""
    spec = importlib.machinery.PathFinder.find_spec(name, path)
    if spec is None or spec.origin is None:
        raise ImportError(f"No module named {name!r}")
    return open(spec.origin), spec.origin, (".py", "r", 1)


def load_module(name, file, pathname, description):
    """``imp.load_module``: (re)execute the module at ``pathname`` as ``name``, registered in sys.modules."""
    if file is not None:
        file.close()
    spec = importlib.util.spec_from_file_location(name, pathname)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _install_imp():
    imp = types.ModuleType("imp", "sgg-plugins stand-in for imp (removed in Python 3.12): find_module, load_module")
    imp.find_module = find_module
    imp.load_module = load_module
    imp.PY_SOURCE = 1
    sys.modules["imp"] = imp


def _needs_imp():
    return "imp" not in sys.modules and importlib.util.find_spec("imp") is None


# ----------------------------------------------------------------------------------------------
# torch.load and .cuda() from host code


def _weights_only_by_default():
    return torch.torch_version.TorchVersion(torch.__version__) >= (2, 6)


def host_torch_load(original):
    @functools.wraps(original)
    def load(f, *args, **kwargs):
        if called_from_host() and "weights_only" not in kwargs:
            kwargs["weights_only"] = False
        return original(f, *args, **kwargs)

    load.sgg_plugins_original = original
    return load


def _install_host_torch_load():
    torch.load = host_torch_load(torch.load)


def host_cuda_noop(original):
    @functools.wraps(original)
    def cuda(self, *args, **kwargs):
        if called_from_host():
            return self
        return original(self, *args, **kwargs)

    cuda.sgg_plugins_original = original
    return cuda


def _install_cuda_noop():
    torch.Tensor.cuda = host_cuda_noop(torch.Tensor.cuda)
    torch.nn.Module.cuda = host_cuda_noop(torch.nn.Module.cuda)


# ----------------------------------------------------------------------------------------------
# the relation post-processor's cross-device indexing

POST_PROCESSOR_MODULE = "cvpods.modeling.meta_arch.one_stage_sgg.rel_detr_inference"
INDEXING = (torch.Tensor.__getitem__, torch.Tensor.__setitem__)


def _refused_index(index, indexed_device):
    """Whether PyTorch refuses ``index`` as an index of a tensor on ``indexed_device``: an integer or
    boolean tensor neither on the CPU nor on that device (ATen's check_indices_on_cpu_or_selfdevice)."""
    return (isinstance(index, torch.Tensor) and not index.dtype.is_floating_point and not index.is_complex()
            and index.device.type != "cpu" and index.device != indexed_device)


def _follow(index, device):
    if isinstance(index, tuple):
        return tuple(_follow(part, device) for part in index)
    return index.to(device) if _refused_index(index, device) else index


class IndicesFollowTheIndexedTensor(TorchFunctionMode):
    """``tensor[index]`` / ``tensor[index] = value`` with an index PyTorch would refuse (on another
    device, not the CPU) moves that index to ``tensor``'s device. Every other call passes unchanged."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in INDEXING and isinstance(args[0], torch.Tensor):
            args = (args[0], _follow(args[1], args[0].device), *args[2:])
        return func(*args, **(kwargs or {}))


def indices_follow_the_indexed_tensor(forward):
    """``RelPostProcess.forward`` under :class:`IndicesFollowTheIndexedTensor` when its predictions are
    off the CPU (the host's own ``device``); on the CPU no index can be on another device, and the
    host's forward runs as it is."""

    @functools.wraps(forward)
    def forward_on_any_device(self, outputs, *args, **kwargs):
        if outputs["pred_rel_vec"].device.type == "cpu":
            return forward(self, outputs, *args, **kwargs)
        with IndicesFollowTheIndexedTensor():
            return forward(self, outputs, *args, **kwargs)

    forward_on_any_device.sgg_plugins_original = forward
    return forward_on_any_device


def _wrap_post_processor(module):
    post_processor = module.RelPostProcess
    if not hasattr(post_processor.forward, "sgg_plugins_original"):
        post_processor.forward = indices_follow_the_indexed_tensor(post_processor.forward)


class PatchAfterImport(importlib.abc.MetaPathFinder):
    """Runs ``patch(module)`` once module ``name`` has been executed by its own loader."""

    def __init__(self, name, patch):
        self.name = name
        self.patch = patch

    def find_spec(self, fullname, path, target=None):
        if fullname != self.name:
            return None
        spec = next((s for s in (f.find_spec(fullname, path, target) for f in sys.meta_path
                                 if f is not self and hasattr(f, "find_spec")) if s is not None), None)
        if spec is None or spec.loader is None:
            return spec
        load = spec.loader.exec_module

        def exec_then_patch(module):
            load(module)
            self.patch(module)

        spec.loader.exec_module = exec_then_patch  # this file's loader instance, made for this spec
        return spec


def _install_post_processor_indices():
    """The host module may not be importable yet (``cvpods._C`` is served after the compat shims):
    patch it when it is imported, or now if it already was."""
    if POST_PROCESSOR_MODULE in sys.modules:
        _wrap_post_processor(sys.modules[POST_PROCESSOR_MODULE])
    elif not any(isinstance(f, PatchAfterImport) and f.name == POST_PROCESSOR_MODULE for f in sys.meta_path):
        sys.meta_path.insert(0, PatchAfterImport(POST_PROCESSOR_MODULE, _wrap_post_processor))
    return "an index on another device follows the indexed tensor inside RelPostProcess.forward"


# (name reported, is it needed here?, apply it: returns None or a detail for the report)
SHIMS = (
    ("numpy aliases", lambda: bool(missing_numpy_aliases()), install_numpy_aliases),
    ("PIL.Image.LINEAR", _needs_pil_linear, _install_pil_linear),
    ("collections.Mapping", lambda: not hasattr(collections, "Mapping"), _install_collections_mapping),
    ("imp (find_module, load_module on importlib)", _needs_imp, _install_imp),
    ("torch.load from host code with weights_only=False", _weights_only_by_default, _install_host_torch_load),
    (".cuda() from host code is a no-op without a GPU", lambda: not torch.cuda.is_available(), _install_cuda_noop),
    # Needed on every machine: the wrapper does nothing on the CPU, and a checkpoint evaluated on a
    # GPU must go through the same code as one evaluated on the CPU.
    ("RelPostProcess indices", lambda: True, _install_post_processor_indices),
)


def install_compat(host_root, logger=None):
    """Apply the shims this environment needs for the SGTR checkout at ``host_root``. Idempotent.

    Returns the names of the shims applied in this process so far.
    """
    _host["root"] = str(host_root)
    return apply_shims(SHIMS, _applied, logger=logger or logging.getLogger("sgg_plugins"))
