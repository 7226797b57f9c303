"""Run-time shims that let the unmodified SGB host run on a modern PyTorch / NumPy, with or without a GPU.

SGB was written for torch 1.4-era APIs. ``install_compat()`` runs before the host is imported and
applies only the shims this environment needs, each reported once on the ``sgg_plugins`` logger:

- ``apex``: a stand-in ``apex.amp`` on ``torch.amp`` (the host's tools and layers import it at
  module level). ``DTYPE "float16"`` trains under float16 autocast with dynamic loss scaling on
  CUDA, and in float32 on CPU.
- ``torch._six``: removed from torch; the host reads ``torch._six.PY3``.
- ``torch.hub._download_url_to_file``: renamed ``download_url_to_file``.
- ``numpy aliases``: ``np.float`` and friends, removed in NumPy 1.24, still used by the host.
- ``.cuda() without a GPU``: the host's relation and attribute losses call ``.cuda()``
  unconditionally; on a machine without CUDA those calls, and only calls made from host code,
  return the tensor or module unchanged.
- ``torch.load for host files``: see ``_host_torch_load``.
- ``distributed without a GPU``: under ``torchrun`` on a machine without CUDA, the host's
  ``torch.cuda.set_device`` is a no-op, its ``init_process_group(backend="nccl")`` runs on gloo,
  ``DistributedDataParallel`` accepts its CPU model despite ``device_ids``, and its
  ``comm.all_gather`` exchanges objects with ``all_gather_object`` instead of CUDA byte tensors.

``MODEL.DEVICE`` (default "cuda" in the host) is handled after the host is imported, by
``watch_device(cfg)``, which ``sgg_plugins.hosts.sgb.install`` calls on the host's config.
"""

import collections.abc
import contextlib
import functools
import importlib.util
import logging
import math
import os
import sys
import types
import weakref

import torch
from yacs.config import CfgNode

from ..common import apply_shims, install_numpy_aliases, missing_numpy_aliases

HOST_PACKAGE = "maskrcnn_benchmark"

_applied = []


def _called_from_host():
    """Whether the code calling the shim that asks (two frames up) is the host's.

    Host code is the ``maskrcnn_benchmark`` package and the host's own scripts (``tools/*.py``),
    which run as ``__main__`` from a file inside the checkout.
    """
    caller = sys._getframe(2).f_globals
    caller_module = caller.get("__name__", "")
    if caller_module == HOST_PACKAGE or caller_module.startswith(HOST_PACKAGE + "."):
        return True
    return caller_module == "__main__" and _is_host_file(caller.get("__file__"))


def _is_host_file(path):
    if not path or HOST_PACKAGE not in sys.modules or not getattr(sys.modules[HOST_PACKAGE], "__file__", None):
        return False
    return os.path.abspath(path).startswith(_host_root() + os.sep)


# ----------------------------------------------------------------------------------------------
# apex.amp stand-in


def _to_float32(value):
    if isinstance(value, torch.Tensor) and value.is_floating_point() and value.dtype != torch.float32:
        return value.float()
    return value


def float_function(fn):
    """apex's ``amp.float_function``: under CUDA autocast, run ``fn`` in float32 with autocast off.

    The host wraps nms and the ROI poolers with it, whose kernels expect float32.
    """

    @functools.wraps(fn)
    def run_in_float32(*args, **kwargs):
        if not torch.is_autocast_enabled("cuda"):
            return fn(*args, **kwargs)
        with torch.autocast("cuda", enabled=False):
            return fn(*map(_to_float32, args), **{k: _to_float32(v) for k, v in kwargs.items()})

    return run_in_float32


class DynamicLossScaler:
    """Dynamic loss scaling as apex O1 and ``torch.amp.GradScaler`` do it, for the host's own step.

    The host calls ``optimizer.step()`` itself after ``amp.scale_loss``, so the scaler cannot own
    the step: on overflow it drops this step's gradients (an optimizer skips parameters whose
    ``.grad`` is None), which is what apex's skipped step amounts to.
    """

    def __init__(self, init_scale=2.0**16, growth_factor=2.0, backoff_factor=0.5, growth_interval=2000):
        self.scale = init_scale
        self.growth_factor = growth_factor
        self.backoff_factor = backoff_factor
        self.growth_interval = growth_interval
        self.steps_since_overflow = 0

    def unscale_or_drop(self, optimizer):
        """Divide the gradients by the scale; if any is inf/nan, drop them all and lower the scale.

        Returns whether the gradients were kept.
        """
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if not params:
            return True
        grads = [p.grad for p in params]
        torch._foreach_mul_(grads, 1.0 / self.scale)
        finite = bool(torch.stack(torch._foreach_norm(grads)).isfinite().all())
        if not finite:
            for p in params:
                p.grad = None
            self.scale *= self.backoff_factor
            self.steps_since_overflow = 0
            logging.getLogger("sgg_plugins").info("sgg-plugins amp: gradient overflow, step skipped, loss scale %g", self.scale)
            return False
        self.steps_since_overflow += 1
        if self.steps_since_overflow == self.growth_interval:
            self.scale *= self.growth_factor
            self.steps_since_overflow = 0
        return True


# optimizer -> its loss scaler, for the optimizers amp.initialize set up for float16
_loss_scalers = weakref.WeakKeyDictionary()


def initialize(model, optimizer, opt_level="O1", **ignored_apex_options):
    """apex's ``amp.initialize`` for the levels SGB uses: "O0" (float32) and "O1" (mixed precision).

    O1 on a CUDA model runs ``model.forward`` under float16 autocast and registers a dynamic loss
    scaler for ``optimizer``; on a CPU model it logs that it trains in float32 and changes nothing.
    Returns ``(model, optimizer)``, the same objects.
    """
    logger = logging.getLogger("sgg_plugins")
    if opt_level not in ("O0", "O1"):
        raise ValueError(
            f"the sgg-plugins apex stand-in supports opt_level 'O0' and 'O1' (what SGB's DTYPE selects), "
            f"got {opt_level!r}; install NVIDIA apex for other levels"
        )
    if opt_level == "O0":
        return model, optimizer
    on_cuda = any(p.is_cuda for p in model.parameters())
    if not on_cuda:
        logger.info("sgg-plugins amp: DTYPE float16 needs CUDA; the model is on CPU, so it trains in float32")
        return model, optimizer
    model.forward = torch.autocast("cuda", dtype=torch.float16)(model.forward)
    _loss_scalers[optimizer] = DynamicLossScaler()
    logger.info("sgg-plugins amp: O1 = float16 autocast on CUDA with dynamic loss scaling")
    return model, optimizer


@contextlib.contextmanager
def scale_loss(loss, optimizer):
    """apex's ``amp.scale_loss``: yields the loss to call ``backward()`` on, scaled when needed.

    With a loss scaler (O1 on CUDA) the loss is multiplied by the current scale and the gradients
    are unscaled, or dropped on overflow, when the block ends; otherwise the loss is yielded as is.
    """
    scaler = _loss_scalers.get(optimizer)
    if scaler is None:
        yield loss
        return
    yield loss.float() * scaler.scale
    scaler.unscale_or_drop(optimizer)


def init(enabled=True, verbose=False, **ignored_apex_options):
    """apex's legacy ``amp.init`` (used by the host's test script). Returns None, the host ignores it.

    Legacy apex patched every torch function globally to run in float16; the stand-in does not, so
    ``DTYPE "float16"`` evaluation runs in float32 (which is said once, when enabled).
    """
    if enabled:
        logging.getLogger("sgg_plugins").info(
            "sgg-plugins amp: amp.init(enabled=True) is not emulated; evaluation runs in float32"
        )


def _make_apex_modules():
    apex = types.ModuleType("apex", "sgg-plugins stand-in for NVIDIA apex: only apex.amp, backed by torch.amp")
    amp = types.ModuleType("apex.amp", "sgg-plugins stand-in for apex.amp, backed by torch.amp")
    for fn in (initialize, scale_loss, float_function, init):
        setattr(amp, fn.__name__, fn)
    apex.amp = amp
    return {"apex": apex, "apex.amp": amp}


def _install_apex():
    sys.modules.update(_make_apex_modules())


def _needs_apex():
    return "apex" not in sys.modules and importlib.util.find_spec("apex") is None


# ----------------------------------------------------------------------------------------------
# removed torch / numpy names


def _install_torch_six():
    six = types.ModuleType("torch._six", "sgg-plugins stand-in for torch._six (removed in torch 2.0)")
    six.PY3 = True
    six.PY37 = True
    six.string_classes = (str, bytes)
    six.int_classes = int
    six.container_abcs = collections.abc
    six.inf = math.inf
    six.nan = math.nan
    sys.modules["torch._six"] = six
    torch._six = six


def _needs_torch_six():
    return not hasattr(torch, "_six") and importlib.util.find_spec("torch._six") is None


def _install_hub_download():
    torch.hub._download_url_to_file = torch.hub.download_url_to_file


# ----------------------------------------------------------------------------------------------
# .cuda() on a machine without CUDA


def _host_cuda_noop(original):
    @functools.wraps(original)
    def cuda(self, *args, **kwargs):
        if _called_from_host():
            return self
        return original(self, *args, **kwargs)

    cuda.sgg_plugins_original = original
    return cuda


def _install_cuda_noop():
    torch.Tensor.cuda = _host_cuda_noop(torch.Tensor.cuda)
    torch.nn.Module.cuda = _host_cuda_noop(torch.nn.Module.cuda)


def _needs_cuda_noop():
    return not torch.cuda.is_available()


# ----------------------------------------------------------------------------------------------
# torch.load of host files


def _weights_only_by_default():
    return torch.torch_version.TorchVersion(torch.__version__) >= (2, 6)


def _host_root():
    return os.path.dirname(os.path.dirname(os.path.abspath(sys.modules[HOST_PACKAGE].__file__)))


def _host_torch_load(original):
    """``torch.load`` that treats loads made by host code as the host expects; other callers are untouched.

    For calls from the ``maskrcnn_benchmark`` package only:

    - ``weights_only`` defaults to False again (torch >= 2.6 made it True). The host unpickles files
      it wrote itself (the dataset-statistics cache, ``eval_results.pytorch`` holding BoxList
      objects, checkpoints with optimizer and scheduler state) or files its config names. That
      adds no trust beyond what running the host already implies: the host executes the Python
      file named by ``cfg.PATHS_CATALOG``. An explicit ``weights_only=`` is respected, and every
      other caller, sgg-plugins included, keeps torch's safe default.
    - a relative path that does not exist under the working directory but does under the host
      root is read from the host root. ``vg_eval.py`` loads ``zeroshot_triplet.pytorch`` relative
      to the working directory, so evaluation would otherwise only work when run from the
      checkout; changing directory instead would break the user's relative config and output paths.
    """
    restore_pickle_default = _weights_only_by_default()

    @functools.wraps(original)
    def load(f, *args, **kwargs):
        if not _called_from_host():
            return original(f, *args, **kwargs)
        if isinstance(f, (str, os.PathLike)) and not os.path.isabs(f) and not os.path.exists(f):
            in_host = os.path.join(_host_root(), f)
            if os.path.exists(in_host):
                f = in_host
        if restore_pickle_default and "weights_only" not in kwargs:
            kwargs["weights_only"] = False
        return original(f, *args, **kwargs)

    load.sgg_plugins_original = original
    return load


def _install_host_torch_load():
    torch.load = _host_torch_load(torch.load)


# ----------------------------------------------------------------------------------------------
# distributed training without CUDA
#
# The host's scripts start a distributed run with ``torch.cuda.set_device(local_rank)`` and
# ``init_process_group(backend="nccl")``, wrap the model in ``DistributedDataParallel(model,
# device_ids=[local_rank], output_device=local_rank)`` and gather evaluation results through
# ``comm.all_gather``, which moves its byte buffers to "cuda". Without CUDA each of these fails; the
# shims below make the same run work on CPU processes over gloo.


def _host_set_device(original):
    @functools.wraps(original)
    def set_device(device):
        if _called_from_host():
            return None  # the host picks the GPU of its local rank; without GPUs every rank is on cpu
        return original(device)

    set_device.sgg_plugins_original = original
    return set_device


def _gloo_without_cuda(original):
    @functools.wraps(original)
    def init_process_group(backend=None, *args, **kwargs):
        if str(backend).lower() == "nccl" and _called_from_host():
            backend = "gloo"  # NCCL only connects GPUs; gloo runs the same collectives on CPU tensors
            logging.getLogger("sgg_plugins").info("sgg-plugins compat: distributed without a GPU: the host's nccl "
                                                  "process group is gloo")
        return original(backend, *args, **kwargs)

    init_process_group.sgg_plugins_original = original
    return init_process_group


def _ddp_for_cpu_modules(ddp_class):
    class DistributedDataParallel(ddp_class):
        """``DistributedDataParallel`` that ignores ``device_ids``/``output_device`` for a module on CPU.

        PyTorch refuses those arguments for a CPU module; the host always passes its local rank.
        Every other call is the original class's.
        """

        def __init__(self, module, device_ids=None, output_device=None, *args, **kwargs):
            if all(p.device.type == "cpu" for p in module.parameters()):
                device_ids = output_device = None
            super().__init__(module, device_ids, output_device, *args, **kwargs)

    DistributedDataParallel.__qualname__ = ddp_class.__qualname__
    DistributedDataParallel.__module__ = ddp_class.__module__
    DistributedDataParallel.sgg_plugins_original = ddp_class
    return DistributedDataParallel


def _install_cpu_distributed():
    torch.cuda.set_device = _host_set_device(torch.cuda.set_device)
    torch.distributed.init_process_group = _gloo_without_cuda(torch.distributed.init_process_group)
    torch.nn.parallel.DistributedDataParallel = _ddp_for_cpu_modules(torch.nn.parallel.DistributedDataParallel)
    return "torch.cuda.set_device from host code is a no-op, its nccl process group is gloo, DDP takes CPU modules"


def all_gather_objects(data):
    """The host's ``comm.all_gather`` (any picklable object from every rank) on any backend.

    The host's version serialises into byte tensors it moves to "cuda"; ``all_gather_object`` does
    the same exchange on the process group's own device (CPU tensors for gloo).
    """
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized() or dist.get_world_size() == 1:
        return [data]
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, data)
    return gathered


def _host_comm_importable():
    try:
        return importlib.util.find_spec(HOST_PACKAGE + ".utils.comm") is not None
    except (ImportError, ValueError):  # no host on the path, or a stand-in package without submodules
        return False


def _install_host_all_gather():
    from maskrcnn_benchmark.utils import comm

    original = comm.all_gather
    comm.all_gather = all_gather_objects
    # Host modules imported already hold the name (``from ..utils.comm import all_gather``).
    for name, module in list(sys.modules.items()):
        if name.startswith(HOST_PACKAGE + ".") and getattr(module, "all_gather", None) is original:
            module.all_gather = all_gather_objects


# ----------------------------------------------------------------------------------------------

# (name reported, is it needed here?, apply it: returns None or a detail for the report)
SHIMS = (
    ("apex (stand-in on torch.amp)", _needs_apex, _install_apex),
    ("torch._six", _needs_torch_six, _install_torch_six),
    ("torch.hub._download_url_to_file", lambda: not hasattr(torch.hub, "_download_url_to_file"), _install_hub_download),
    ("numpy aliases", lambda: bool(missing_numpy_aliases()), install_numpy_aliases),
    (".cuda() from host code is a no-op without a GPU", _needs_cuda_noop, _install_cuda_noop),
    ("torch.load for host files (host-root paths, weights_only=False)", lambda: True, _install_host_torch_load),
    ("distributed without a GPU", _needs_cuda_noop, _install_cpu_distributed),
    ("host all_gather through all_gather_object (no GPU)",
     lambda: _needs_cuda_noop() and _host_comm_importable(), _install_host_all_gather),
)


def install_compat(logger=None):
    """Apply the shims this environment needs (see the module docstring). Idempotent.

    Returns the names of the shims applied in this process so far.
    """
    return apply_shims(SHIMS, _applied, logger=logger or logging.getLogger("sgg_plugins"))


# ----------------------------------------------------------------------------------------------
# MODEL.DEVICE


def fall_back_to_cpu(cfg, logger=None):
    """Set ``cfg.MODEL.DEVICE`` to "cpu" when it names CUDA and no GPU is available. Returns whether it did."""
    device = str(cfg.MODEL.DEVICE)
    if torch.cuda.is_available() or not device.startswith("cuda"):
        return False
    was_frozen = cfg.is_frozen()
    cfg.defrost()
    cfg.MODEL.DEVICE = "cpu"
    if was_frozen:
        cfg.freeze()
    (logger or logging.getLogger("sgg_plugins")).warning(
        "sgg-plugins: MODEL.DEVICE is %r but no GPU is available; running on cpu", device
    )
    return True


WATCH_DEVICE_FLAG = "_sgg_plugins_watch_device"


def _freeze_checking_device(original_freeze):
    @functools.wraps(original_freeze)
    def freeze(self):
        if self.__dict__.get(WATCH_DEVICE_FLAG):
            fall_back_to_cpu(self)
        original_freeze(self)

    freeze.sgg_plugins_original = original_freeze
    return freeze


def watch_device(cfg):
    """Make ``cfg.freeze()`` (and its clones') switch a CUDA ``MODEL.DEVICE`` to cpu when there is no GPU.

    The host's tools merge the YAML file and the command-line opts and then call ``cfg.freeze()``
    before building anything, so freezing is the one moment where the final device is known and
    can still change. The mark lives in the node's ``__dict__``, next to yacs' own flags (so it is
    copied by ``clone()`` and is no config key); ``CfgNode.freeze`` checks the device only on
    marked nodes, every other yacs config freezes as before.
    """
    if not hasattr(CfgNode.freeze, "sgg_plugins_original"):
        CfgNode.freeze = _freeze_checking_device(CfgNode.freeze)
    cfg.__dict__[WATCH_DEVICE_FLAG] = True
