"""Host-device synchronisations in one training step of an SGB predictor, per objective, on the CPU.

    python benchmarks/sync_points.py [--objectives ALIGN RCL ...] [--predictor MotifPredictor] [--json OUT]

One training step (forward and backward) of the fake SGB predictors of ``tests/fake_sgb.py`` with each
objective alone, all five together, and none (the host's own step), under :class:`SyncCounter`: every
operation that, with the tensors on a CUDA device, would make Python wait for the device is recorded
and attributed to its call site, the innermost ``sgg_plugins`` frame (file:line). It is the
*plug-in's* when the innermost frame outside torch is the plug-in's code, the *host's* when it is the
host's code (the call site then names the plug-in frame that ran it: the clean pass, or an extra pass
an objective runs through the host's modules), and *backward* when autograd's backward runs it.
Printed as a table per objective: sync points per step (plug-in's / host's / backward) with call sites.

What counts as a synchronisation (what ``torch.cuda.set_sync_debug_mode("warn")`` reports on a GPU,
and the kernels that call it: ``_local_scalar_dense``, ``nonzero``, and the blocking copies of
``memcpy_and_sync`` in ATen's Copy.cu, which wait for the stream in both directions):

- a read of a device value: ``.item()``, ``float()`` / ``int()`` / ``bool()`` / ``if tensor:``
  (``aten::_local_scalar_dense``), ``aten::equal``;
- an output whose size depends on the data: ``nonzero`` / ``argwhere`` / ``torch.where(cond)``,
  ``masked_select``, indexing or index_put with a boolean mask, ``torch.unique`` (``_unique2``,
  ``unique_dim``, ``unique_consecutive``), ``bincount`` (CUDA reads the maximum first),
  ``repeat_interleave`` without ``output_size``;
- a blocking copy: device to host (``.cpu()``, ``.tolist()``, ``.numpy()``) and host to device
  (``torch.tensor`` / ``torch.as_tensor`` of Python data with a ``device``, ``.to(device)`` of a CPU
  tensor, a CPU index into a device tensor, which ATen copies to the device); a host-to-device
  ``.to(device, non_blocking=True)`` is not one (from pageable memory CUDA stages the bytes and
  returns without waiting for the stream; ``sgg_plugins/regularizers/transfer.py``).

On a CPU run the copies do not happen, so they are found by tracking which tensors a GPU run would
hold on the CPU: a tensor made without a ``device`` (``torch.tensor(list)``, ``torch.randint(n, (k,))``,
a factory without ``device``) is a host tensor, ops on host tensors only give host tensors, everything
else (the step's inputs, the model, what is made with ``device=``) is on the device. The emulated CUDA
of ``tests/emulated_cuda.py`` (CPU data reporting ``cuda:0``) would show the copies directly, but a
training step cannot run on it: with a CUDA device, ``nn.LSTM`` / ``GRUCell`` dispatch to CUDA-only fused
kernels (``_thnn_fused_lstm_cell``, cuDNN) that have no CPU implementation to run the data on.

Inherent synchronisations of the plug-in (left, listed by the benchmark like the others):

- RCL: ``torch.unique`` of the batch's triplet keys (texts are looked up and projected once per unique
  triplet; the [U, U] sampling similarity needs U), and the boolean selection of the foreground
  relations whose triplet the bank holds (the number of relations in the contrast is the data's).
- CLIPMATCH: ``torch.unique`` of the candidate texts (the table's columns are the batch's distinct
  texts) and the selection of the rows that take part.
- PROBE: ``nonzero`` of each image's relation map (the supervising graph's edges).
- MRC: the one-object images are built per object in Python from the host's box lists (their number
  is read from the proposals, which SGB keeps per image).
- Under torch.distributed with GATHER_NEGATIVES: the exchange of row counts (one small all_gather,
  read on the CPU to pad and trim) per gathered tensor.
"""

import argparse
import collections
import contextlib
import json
import os
import platform
import re
import sys
from pathlib import Path

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

REPO = Path(__file__).resolve().parent.parent
OBJECTIVE_NODES = ("ALIGN", "RCL", "PROBE", "CLIPMATCH", "MRC")
ROWS = ("none",) + OBJECTIVE_NODES + ("all five",)

# aten operator -> why a CUDA run waits there (applies when the tensor it reads is on the device).
VALUE_READS = {"aten::_local_scalar_dense": "reads a device value (.item(), float(), int(), bool(), if tensor)",
               "aten::equal": "torch.equal returns a Python bool",
               "aten::is_nonzero": "reads a device value (bool(tensor))"}
DATA_DEPENDENT = {"aten::nonzero": "nonzero: output size depends on the data",
                  "aten::nonzero_numpy": "torch.where(cond): output size depends on the data",
                  "aten::argwhere": "argwhere: output size depends on the data",
                  "aten::masked_select": "masked_select: output size depends on the data",
                  "aten::_unique": "torch.unique: output size depends on the data",
                  "aten::_unique2": "torch.unique: output size depends on the data",
                  "aten::unique_dim": "torch.unique(dim=): output size depends on the data",
                  "aten::unique_consecutive": "unique_consecutive: output size depends on the data",
                  "aten::unique_dim_consecutive": "unique_consecutive: output size depends on the data",
                  "aten::bincount": "bincount: CUDA reads the maximum to size the output"}
INDEX_OPS = ("aten::index", "aten::index_put", "aten::index_put_", "aten::_index_put_impl_")
HOST = "_sgg_sync_points_host"  # attribute marking a tensor a GPU run would hold on the CPU
SKIPPED_FILES = (os.sep + "torch" + os.sep, os.sep + "contextlib.py", os.sep + "functools.py",
                 str(Path(__file__).resolve()))


def on_host(tensor):
    return getattr(tensor, HOST, False)


def _mark(value, host):
    for t in tree_flatten(value)[0]:
        if isinstance(t, torch.Tensor):
            try:
                setattr(t, HOST, host)
            except (AttributeError, RuntimeError):  # a tensor that takes no attribute stays unmarked
                pass
    return value


def sync_reason(func, args, kwargs):
    """Why ``func(*args, **kwargs)`` synchronises on a device, or None (module docstring)."""
    name = func._schema.name
    tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
    on_device = [t for t in tensors if not on_host(t)]
    if not on_device:
        return None
    if name in VALUE_READS:
        return VALUE_READS[name]
    if name in DATA_DEPENDENT:
        return DATA_DEPENDENT[name]
    if name == "aten::repeat_interleave" and func._overloadname == "Tensor" and kwargs.get("output_size") is None \
            and (len(args) < 2 or args[1] is None):
        return "repeat_interleave without output_size: reads the total"
    if name in INDEX_OPS and not on_host(args[0]):
        indices = [i for i in args[1] if i is not None]
        if any(i.dtype in (torch.bool, torch.uint8) for i in indices):
            return "boolean-mask indexing: output size depends on the data (nonzero)"
        if any(on_host(i) and i.dim() > 0 for i in indices):
            return "a CPU index into a device tensor: copied to the device"
    return None


class SyncCounter(TorchDispatchMode):
    """Records ``(owner, site, reason)`` for every synchronisation (module docstring) while active.

    With it, a :class:`_Placement` function mode tracks which tensors a GPU run would hold on the CPU and
    records the copies between the two, which a CPU run does not make.
    """

    def __init__(self):
        super().__init__()
        self.records = []
        self.phase = "forward"

    # ---------------------------------------------------------------- attribution
    def _site(self):
        frame, first_outside, plugin = sys._getframe(2), None, None
        while frame is not None:
            name = frame.f_code.co_filename
            if not any(part in name for part in SKIPPED_FILES):
                if first_outside is None:
                    first_outside = frame
                if os.sep + "sgg_plugins" + os.sep in name and plugin is None:
                    plugin = frame
            frame = frame.f_back
        if self.phase == "backward":
            return "backward", "autograd"
        owner = "plug-in" if first_outside is not None and first_outside is plugin else "host"
        where = plugin or first_outside
        site = "?" if where is None else f"{_relative(where.f_code.co_filename)}:{where.f_lineno}"
        if owner == "host" and first_outside is not None and first_outside is not plugin:
            site += f" via {_relative(first_outside.f_code.co_filename)}:{first_outside.f_lineno}"
        return owner, site

    def record(self, reason):
        owner, site = self._site()
        self.records.append((owner, site, reason))

    # ---------------------------------------------------------------- dispatch
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        reason = sync_reason(func, args, kwargs)
        if reason:
            self.record(reason)
        return func(*args, **kwargs)

    def __enter__(self):
        from sgg_plugins.regularizers import transfer

        # The plug-in's value checks are queued on a GPU and read on the CPU: count them as a GPU runs them.
        self._queued, transfer._queued = transfer._queued, lambda tensor: True
        self._placement = _Placement(self)
        self._placement.__enter__()
        return super().__enter__()

    def __exit__(self, *exc):
        from sgg_plugins.regularizers import transfer

        try:
            return super().__exit__(*exc)
        finally:
            self._placement.__exit__(*exc)
            transfer._queued = self._queued

    # ---------------------------------------------------------------- results
    def counts(self):
        by_owner = collections.Counter(owner for owner, _, _ in self.records)
        return {owner: by_owner.get(owner, 0) for owner in ("plug-in", "host", "backward")}

    def sites(self, owner=None):
        """{(owner, site, reason): count}, most frequent first."""
        found = collections.Counter(r for r in self.records if owner is None or r[0] == owner)
        return dict(found.most_common())


READS = {torch.Tensor.cpu: "device-to-host copy (.cpu())", torch.Tensor.tolist: "device-to-host copy (.tolist())",
         torch.Tensor.numpy: "device-to-host copy (.numpy())"}
FROM_DATA = (torch.tensor, torch.as_tensor)


class _Placement(TorchFunctionMode):
    """Where a GPU run would hold each tensor, at the level of Python calls (where ``device=`` is seen as
    written; in ATen a CPU factory always gets ``device=cpu``), and the copies a CPU run does not make."""

    def __init__(self, counter):
        super().__init__()
        self.counter = counter

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        device = kwargs.get("device")
        if func in READS and not on_host(args[0]):
            self.counter.record(READS[func])
        out = func(*args, **kwargs)
        if func is torch.Tensor.to:
            host = self._moved(args, kwargs)
        elif func in READS:
            host = True
        elif func in FROM_DATA:
            host = device is None and (not tensors or on_host(tensors[0]))
            if device is not None and (not tensors or on_host(tensors[0])):
                self.counter.record("host-to-device copy (torch.tensor / as_tensor with a device)")
        elif func is torch.Tensor.new_tensor:  # Python data onto the tensor's device
            host = on_host(args[0]) if device is None else device == "cpu"
            if not host and not (isinstance(args[1], torch.Tensor) and not on_host(args[1])):
                self.counter.record("host-to-device copy (Tensor.new_tensor)")
        elif device is not None:
            host = device == "cpu"
        else:  # a factory without device= makes a CPU tensor; an op on CPU tensors only gives one
            host = all(on_host(t) for t in tensors)
        inputs = {id(t) for t in tensors}
        for t in tree_flatten(out)[0]:  # an in-place op returns its input, which keeps its place
            if isinstance(t, torch.Tensor) and id(t) not in inputs:
                _mark(t, host)
        return out

    def _moved(self, args, kwargs):
        """``Tensor.to``: whether the result is on the host; records the copy it makes."""
        source, target = args[0], kwargs.get("device")
        for a in args[1:]:
            if isinstance(a, (str, torch.device)):
                target = a
            elif isinstance(a, torch.Tensor):
                target = "cpu" if on_host(a) else a.device
        if target is None:
            return on_host(source)
        to_host = target == "cpu"  # the literal; a torch.device here is taken for a tensor's device
        if to_host and not on_host(source):
            self.counter.record("device-to-host copy (.to('cpu'))")
        elif not to_host and on_host(source) and not kwargs.get("non_blocking", False) \
                and True not in [a for a in args[1:] if isinstance(a, bool)]:
            # non_blocking=True from pageable memory: CUDA stages the bytes and returns, no stream wait
            self.counter.record("host-to-device copy (.to(device) of a CPU tensor)")
        return to_host


def _relative(filename):
    path = Path(filename).resolve()
    for root in (REPO, Path(os.environ.get("SGB_ROOT", "/nonexistent"))):
        try:
            return str(path.relative_to(root))
        except ValueError:
            continue
    return path.name


# -------------------------------------------------------------------------------- the step, on fake SGB
@contextlib.contextmanager
def fake_text_banks():
    """RCL's and CLIPMATCH's text banks from random tables over the fake classes: no CLIP, no dataset."""
    sys.path.insert(0, str(REPO / "tests"))
    import fake_sgb as fake
    from sgg_plugins.hosts.sgb.objectives import clipmatch, rcl
    from sgg_plugins.text.candidates import CandidateTextBank

    text = fake.FakeText()

    def candidate_bank(obj_classes, pred_classes, pairs, **kwargs):
        pairs = torch.unique(pairs, dim=0)
        return CandidateTextBank(pairs, text.unit(len(pairs), len(pred_classes) - 1), text.unit(),
                                 len(obj_classes) - 1)

    patches = [(rcl, "training_text_sources", text.sources), (rcl, "load_or_compute_bank", text.bank),
               (rcl, "glove_phrases", text.glove_phrases),
               (clipmatch, "candidate_sources", text.sources),
               (clipmatch, "load_or_compute_candidate_bank", candidate_bank)]
    saved = [(module, name, getattr(module, name)) for module, name, _ in patches]
    for module, name, value in patches:
        setattr(module, name, value)
    try:
        yield fake
    finally:
        for module, name, value in saved:
            setattr(module, name, value)


def row_options(row):
    """Config options of the fake predictor for a row of the table (``none``, a node, ``all five``)."""
    nodes = OBJECTIVE_NODES if row == "all five" else () if row == "none" else (row,)
    opts = {f"{node}_ENABLED": True for node in nodes}
    if "RCL" in nodes:
        opts["RCL_EMBED_DIM"] = 16
    return opts


def build_fake(row, predictor="MotifPredictor", seed=0, **extra):
    """The fake SGB ``predictor`` with the row's objectives (in ``fake_text_banks``)."""
    import fake_sgb as fake
    from sgg_plugins.hosts.sgb.predictors import regularized_predictor_class

    torch.manual_seed(seed)
    base = getattr(fake, predictor)
    cfg = fake.make_cfg(predictor, **{**row_options(row), **extra})
    cfg.MODEL.ROI_RELATION_HEAD.NUM_CLASSES = fake.NUM_REL_CLASSES  # MODEL.MRC's classifier reads it
    if row == "none":
        return base(cfg, fake.IN_CHANNELS)
    return regularized_predictor_class(base)(cfg, fake.IN_CHANNELS).train()


def training_step(model, batch, counter=None):
    """Forward and backward of one step; returns (losses dict, total loss)."""
    out = model(*batch)
    losses = dict(out[2])
    total = sum(losses.values()) + sum(d.float().sum() for d in out[1]) + sum(d.float().sum() for d in out[0])
    if counter is not None:
        counter.phase = "backward"
    total.backward()
    if counter is not None:
        counter.phase = "forward"
    return losses, total


def count_step(row, predictor="MotifPredictor", seed=0, warmup=1, **extra):
    """A :class:`SyncCounter` over one training step of ``row`` after ``warmup`` uncounted steps (the
    first step may do once-only work: moving a text bank, building a forest builder)."""
    with fake_text_banks() as fake:
        model = build_fake(row, predictor, seed, **extra)
        for step in range(warmup):
            training_step(model, fake.make_batch(seed=step))
        batch = fake.make_batch(seed=warmup)
        counter = SyncCounter()
        with counter:
            training_step(model, batch, counter)
    return counter


def step_outputs(row, predictor="MotifPredictor", seed=0, steps=2, **extra):
    """Losses and gradients of ``steps`` training steps of ``row`` (no counter): what a change to the
    training path must leave bit-identical on the CPU (tests/test_sync_points.py)."""
    outputs = {}
    with fake_text_banks() as fake:
        model = build_fake(row, predictor, seed, **extra)
        for step in range(steps):
            model.zero_grad(set_to_none=True)
            batch = fake.make_batch(seed=step)
            losses, total = training_step(model, batch)
            outputs.update({f"{step}/{k}": v.detach().clone() for k, v in losses.items()})
            outputs[f"{step}/total"] = total.detach().clone()
            outputs.update({f"{step}/grad/{n}": p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
            outputs.update({f"{step}/grad/input{i}": t.grad.clone() for i, t in enumerate(batch[4:])})
    return outputs


def digests(outputs):
    """{name: sha256 of the tensor's bytes, dtype and shape}: bit-identity in a small file."""
    import hashlib

    def digest(t):
        t = t.detach().contiguous()
        return hashlib.sha256(f"{t.dtype}{tuple(t.shape)}".encode() + t.numpy().tobytes()).hexdigest()[:24]

    return {name: digest(t) for name, t in sorted(outputs.items())}


def fingerprints(outputs, waves=3):
    """{name: [norm, projection, ...]}: each tensor as float64 numbers that another machine compares
    with a tolerance (a CPU with other vector units or BLAS code paths sums in another order, so its
    bits differ). The projections are onto fixed unit waves ∝ cos(k · 0.618 · i), k = 1..``waves``:
    a change larger than rounding moves the norm or one of them."""
    result = {}
    for name, t in sorted(outputs.items()):
        flat = t.detach().reshape(-1).double()
        index = torch.arange(flat.numel(), dtype=torch.float64)
        numbers = [float(flat.norm())]
        for k in range(1, waves + 1):
            wave = torch.cos(k * 0.618 * index)
            numbers.append(float(flat @ (wave / wave.norm().clamp_min(1e-12))))
        result[name] = numbers
    return result


def fingerprint_mismatches(found, reference, rtol=1e-3, atol=1e-6):
    """Names whose fingerprints differ by more than ``rtol`` of the tensor's norm plus ``atol``: a unit
    wave's projection moves by at most the change of the tensor (Cauchy–Schwarz), so one bound serves
    all. Measured between this machine's AVX512, AVX2 and scalar kernels (``ATEN_CPU_CAPABILITY``):
    at most 1.9e-5 of the norm, and gradients that are rounding alone (a bias before a BatchNorm,
    norm 1e-10) differ by all of themselves, hence ``atol``."""
    names = sorted(found.keys() | reference.keys())
    return [name for name in names
            if name not in found or name not in reference
            or any(abs(a - b) > rtol * max(found[name][0], reference[name][0]) + atol
                   for a, b in zip(found[name], reference[name]))]


def machine():
    """What decides a CPU run's bits: the torch build, the kernels' vector capability, the processor
    (BLAS libraries choose code paths by vendor and model) and the threads a reduction is split over
    (``OMP_NUM_THREADS``, else one per core)."""
    cpuinfo = Path("/proc/cpuinfo")
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), re.M) if cpuinfo.exists() else None
    return {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "processor": model.group(1).strip() if model else platform.processor(),
            "threads": int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count())}


def table(rows, predictor="MotifPredictor"):
    """{row: {"counts": {...}, "sites": [[owner, site, reason, count], ...]}}."""
    result = {}
    for row in rows:
        counter = count_step(row, predictor)
        result[row] = {"counts": counter.counts(),
                       "sites": [[*key, n] for key, n in counter.sites().items()]}
    return result


def format_table(result, predictor):
    lines = [f"Sync points per training step, fake SGB {predictor} (tests/fake_sgb.py), forward + backward", "",
             "| objectives | plug-in's | host's | backward |", "|---|---|---|---|"]
    for row, found in result.items():
        c = found["counts"]
        lines.append(f"| {row} | {c['plug-in']} | {c['host']} | {c['backward']} |")
    for row, found in result.items():
        lines += ["", f"{row}:"]
        lines += [f"  {n:3d}  {owner:8s} {site}  [{reason}]" for owner, site, reason, n in found["sites"]] or ["  none"]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objectives", nargs="*", default=list(ROWS), help=f"rows, of {', '.join(ROWS)}")
    parser.add_argument("--predictor", default="MotifPredictor",
                        help="a fake SGB predictor: MotifPredictor, VCTreePredictor, TransformerPredictor, IMPPredictor")
    parser.add_argument("--json", help="also write the table as JSON here")
    args = parser.parse_args(argv)
    result = table(args.objectives, args.predictor)
    print(format_table(result, args.predictor))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
