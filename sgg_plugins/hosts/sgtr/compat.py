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
  ``boxlist_iou`` calls it unconditionally) returns the tensor or module unchanged.

Host code is code compiled from a file under the host checkout (``cvpods``, the experiment's
``net`` / ``modeling`` modules, the host's scripts).
"""

import collections
import collections.abc
import functools
import importlib.machinery
import importlib.util
import logging
import sys
import types

import torch

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


# (name reported, is it needed here?, apply it: returns None or a detail for the report)
SHIMS = (
    ("numpy aliases", lambda: bool(missing_numpy_aliases()), install_numpy_aliases),
    ("PIL.Image.LINEAR", _needs_pil_linear, _install_pil_linear),
    ("collections.Mapping", lambda: not hasattr(collections, "Mapping"), _install_collections_mapping),
    ("imp (find_module, load_module on importlib)", _needs_imp, _install_imp),
    ("torch.load from host code with weights_only=False", _weights_only_by_default, _install_host_torch_load),
    (".cuda() from host code is a no-op without a GPU", lambda: not torch.cuda.is_available(), _install_cuda_noop),
)


def install_compat(host_root, logger=None):
    """Apply the shims this environment needs for the SGTR checkout at ``host_root``. Idempotent.

    Returns the names of the shims applied in this process so far.
    """
    _host["root"] = str(host_root)
    return apply_shims(SHIMS, _applied, logger=logger or logging.getLogger("sgg_plugins"))
