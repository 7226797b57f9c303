"""Reading and steering a host model's intermediate tensors without editing the host.

The hosts' predictors return only logits; the regularizers need the tensors in between (the
relation feature the classifier reads, per-object context features) and need to run a predictor a
second time with some inputs masked and the last layer swapped. Everything here is scoped to a
``with`` block: hooks are registered on entry and removed on exit, so outside a training step the
host's modules carry no hook at all (eval outputs cannot be affected).

A *tap* names one tensor: a module path relative to the root ("context_layer.edge_ctx_rnn"),
``what`` = "input" / "output" (first positional input, or the output / one element of a tuple
output), "call" (the positional and keyword arguments) or "buffers" (clones of the module's own
buffers as they were when the call began, before the call updates them: a BatchNorm's running
statistics as they stood before the step), and whether the first or the last call within the
block is kept (modules such as a GRU cell are called once per message-passing iteration; a
classifier may be reused by auxiliary losses after the main call).
"""

import contextlib
from dataclasses import dataclass
from typing import Optional

import torch
from torch.nn.utils.rnn import PackedSequence


@dataclass(frozen=True)
class Tap:
    path: str
    what: str = "output"  # "input" (first positional arg), "output", "call" (args, kwargs), or "buffers"
    index: Optional[int] = None  # element of a tuple output
    call: str = "first"  # "first" or "last" call inside the block
    method: Optional[str] = None  # tap a bound method of the module instead of its forward


def resolve(root, path):
    """The submodule of ``root`` at dotted ``path`` ("" is the root itself)."""
    module = root
    for part in filter(None, path.split(".")):
        module = getattr(module, part)
    return module


def has_path(root, path):
    try:
        resolve(root, path)
    except AttributeError:
        return False
    return True


def _pick(tap, args, kwargs, output):
    if tap.what == "call":
        return args, kwargs
    value = args[0] if tap.what == "input" else output
    if tap.index is not None:
        value = value[tap.index]
    return value


@contextlib.contextmanager
def capture(root, taps):
    """Record the tensors named by ``taps`` (a dict name -> Tap) while the block runs.

    Yields a dict that is filled as the forward pass runs; names whose module was never called are
    absent.
    """
    found = {}
    handles = []
    restore_methods = []

    def record(name, tap, value):
        if tap.call == "last" or name not in found:
            found[name] = value

    for name, tap in taps.items():
        if tap.what == "buffers" and tap.method is not None:  # checked before any hook is registered
            raise ValueError(f"tap {name!r}: 'buffers' reads a module's state, not a method's call")
    for name, tap in taps.items():
        module = resolve(root, tap.path)
        if tap.method is not None:
            original = getattr(module, tap.method)

            def wrapper(*args, _original=original, _name=name, _tap=tap, **kwargs):
                output = _original(*args, **kwargs)
                record(_name, _tap, _pick(_tap, args, kwargs, output))
                return output

            # An instance attribute shadows the class's method for this object only.
            restore_methods.append((module, tap.method, module.__dict__.get(tap.method, _ABSENT)))
            setattr(module, tap.method, wrapper)
        elif tap.what == "buffers":
            def pre_hook(mod, args, _name=name, _tap=tap):
                record(_name, _tap, {key: buffer.detach().clone() for key, buffer in mod._buffers.items()
                                     if buffer is not None})

            handles.append(module.register_forward_pre_hook(pre_hook))
        else:
            def hook(mod, args, kwargs, output, _name=name, _tap=tap):
                record(_name, _tap, _pick(_tap, args, kwargs, output))

            handles.append(module.register_forward_hook(hook, with_kwargs=True))
    try:
        with _removed_on_exit(handles):
            yield found
    finally:
        for module, method, previous in reversed(restore_methods):
            _restore_instance_attribute(module, method, previous)


def map_floating(fn, value):
    """Apply ``fn`` to every floating tensor in ``value`` (tensors, PackedSequences, tuples, lists)."""
    if isinstance(value, PackedSequence):
        return value._replace(data=fn(value.data))
    if torch.is_tensor(value):
        return fn(value) if value.is_floating_point() else value
    if isinstance(value, tuple):
        return tuple(map_floating(fn, v) for v in value)
    if isinstance(value, list):
        return [map_floating(fn, v) for v in value]
    return value


@contextlib.contextmanager
def replace_outputs(root, replacements):
    """While the block runs, the module at each path returns ``replacements[path](input)`` instead.

    The original module still runs (its output is discarded); this keeps the host's own control flow
    untouched while the result that flows on is the replacement's.
    """
    handles = []
    for path, make_output in replacements.items():
        def hook(module, args, output, _make=make_output):
            return _make(args[0], output)

        handles.append(resolve(root, path).register_forward_hook(hook))
    with _removed_on_exit(handles):
        yield


@contextlib.contextmanager
def _removed_on_exit(handles):
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def overridden_method(module, name, function):
    """For the block, ``module.<name>`` is ``function`` (an instance attribute shadowing the
    class's method, for this object only); ``function=None`` leaves the module as it is."""
    if function is None:
        yield
        return
    previous = module.__dict__.get(name, _ABSENT)
    setattr(module, name, function)
    try:
        yield
    finally:
        _restore_instance_attribute(module, name, previous)


_ABSENT = object()


def _restore_instance_attribute(module, name, previous):
    """Put back an instance attribute that a scoped override shadowed, or remove the override."""
    if previous is _ABSENT:
        delattr(module, name)
    else:
        setattr(module, name, previous)


@contextlib.contextmanager
def patched_attribute(owner, name, value):
    """Set ``owner.name = value`` for the block and put the original back afterwards."""
    original = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, original)
