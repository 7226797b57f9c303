"""Mechanisms every host adapter needs, written once: the shim table and its once-only report,
"is the caller host code?", the NumPy aliases the hosts still use, and the launchers' option
splitting.

A *shim* is a ``(name, needed, apply)`` triple: ``needed()`` says whether this environment lacks
what the host expects, ``apply()`` provides it and may return a detail for the report. A shim is
applied at most once per process and reported once on the ``sgg_plugins`` logger at DEBUG: a shim
keeps the host's behaviour (it makes the host run here, or skips work nothing reads), so its line is
for the curious; a replacement that changes what runs logs its own INFO line when it takes effect
(the nccl process group made gloo, torchvision's ops for an unbuilt extension, apex's amp on torch.amp).
"""

import importlib.abc
import importlib.machinery
import importlib.util
import logging
import os
import sys
from pathlib import Path

import numpy as np

LOGGER_NAME = "sgg_plugins"


def apply_shims(shims, applied, what="compat", logger=None):
    """Apply each needed shim of ``shims`` not yet in ``applied`` (a list, extended in place).

    Returns a copy of ``applied``: the names of the shims applied in this process so far.
    """
    logger = logger or logging.getLogger(LOGGER_NAME)
    for name, needed, apply in shims:
        if name in applied or not needed():
            continue
        detail = apply()
        applied.append(name)
        logger.debug("sgg-plugins %s: %s%s", what, name, f" ({detail})" if detail else "")
    return list(applied)


def put_host_first(root, package):
    """Make the checkout at ``root`` the one ``import <package>`` finds: first on ``sys.path``.

    Refuses, with one line, when ``package`` is already imported from another checkout: shims
    installed now would not reach the modules already loaded.
    """
    loaded = sys.modules.get(package)
    if loaded is not None and getattr(loaded, "__file__", None):
        imported_from = Path(loaded.__file__).resolve().parent.parent
        if imported_from != Path(root).resolve():
            raise RuntimeError(
                f"{package} is already imported from {imported_from}, not from the requested host {root}; "
                "sgg-plugins must be installed before the host is imported: run in a fresh process.")
    if sys.path[:1] != [str(root)]:
        if str(root) in sys.path:
            sys.path.remove(str(root))
        sys.path.insert(0, str(root))


def is_under(path, root):
    """Whether file ``path`` lies inside directory ``root``."""
    if not path or not root:
        return False
    return os.path.abspath(path).startswith(os.path.abspath(root) + os.sep)


HOSTS_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def called_from_files_under(root, depth=2):
    """Whether the code ``depth`` frames up from the caller of this function was read from a file
    under ``root``.

    Host code is recognised by where it was compiled from, not by its module name: an SGTR
    experiment's own modules (``net``, ``modeling.*``) and its scripts run as ``__main__`` are host
    code as much as the ``cvpods`` package is. Frames of sgg-plugins' own shims are skipped, so that
    shims wrapping the same function (two wrappers of ``torch.load``) see the host behind them.
    """
    frame = sys._getframe(depth + 1)
    while frame is not None and is_under(frame.f_code.co_filename, HOSTS_PACKAGE_DIR):
        frame = frame.f_back
    return frame is not None and is_under(frame.f_code.co_filename, root)


# The builtin-type aliases removed in NumPy 1.24; both hosts still use np.float and np.bool.
NUMPY_ALIASES = {"float": float, "int": int, "bool": bool, "object": object}


def missing_numpy_aliases():
    # vars(), not hasattr(): NumPy's module __getattr__ warns about the removed names it is asked for.
    return [name for name in NUMPY_ALIASES if name not in vars(np)]


def install_numpy_aliases():
    missing = missing_numpy_aliases()
    for name in missing:
        setattr(np, name, NUMPY_ALIASES[name])
    return ", ".join("np." + name for name in missing)


def split_options(argv, options=(), flags=(), aliases=None):
    """Take the launcher's own options out of ``argv`` wherever they appear.

    ``options`` take a value (``--opt VALUE`` or ``--opt=VALUE``), ``flags`` do not; ``aliases``
    maps another spelling to the canonical one. Returns ``(values, rest)``: a dict keyed by the
    canonical spelling (flags map to True) and the remaining arguments in their order.
    """
    aliases = aliases or {}
    values = {}
    rest = []
    tokens = iter(argv)
    for token in tokens:
        if token in flags:
            values[aliases.get(token, token)] = True
            continue
        option, has_value, value = token.partition("=")
        if option not in options:
            rest.append(token)
            continue
        if not has_value:
            value = next(tokens, None)
            if value is None:
                raise SystemExit(f"error: {option} needs a value")
        values[aliases.get(option, option)] = value
    return values, rest


def set_up_launcher_logging():
    """Print sgg-plugins' messages (shims applied, device fallback) next to the host's log, on rank 0,
    and keep libraries from configuring the root logger, which would print the host's lines twice."""
    from ..logs import keep_root_unconfigured

    logger = logging.getLogger(LOGGER_NAME)
    if not (logger.handlers or logging.getLogger().handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO if reporting_process() else logging.WARNING)
    keep_root_unconfigured()


def reporting_process():
    """Whether this process prints what stops a run: rank 0 under torchrun (``RANK``, else ``LOCAL_RANK``),
    or the only process."""
    return os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) == "0"


def stop_with(line):
    """The ``SystemExit`` that stops a launcher on ``line`` (an error or its message): exit status 1 and
    ``error: <line>`` on rank 0; the other processes, which meet the same error, exit 1 silently, so
    that under torchrun the line is printed once, followed only by torchrun's own summary."""
    return SystemExit(f"error: {line}" if reporting_process() else 1)


# ----------------------------------------------------------------------------------------------
# compiled extensions: the host's own build when it loads, else a stand-in served at import time


def load_compiled_extension(package_dir, module_name, logger=None):
    """The host's own built extension ``<package_dir>/_C*.so`` if there is one and it loads with this
    torch, else None."""
    candidates = [Path(package_dir) / f"_C{suffix}" for suffix in importlib.machinery.EXTENSION_SUFFIXES]
    built = next((path for path in candidates if path.is_file()), None)
    if built is None:
        return None
    spec = importlib.util.spec_from_file_location(module_name, built)
    compiled = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(compiled)
    except ImportError as error:
        # Typically an extension built against another torch (undefined symbol).
        (logger or logging.getLogger(LOGGER_NAME)).info(
            "sgg-plugins: the host's built extension %s does not load (%s); using the stand-in", built, error
        )
        return None
    return compiled


class PreparedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Answers ``import <name>`` with a prepared module object, so the host imports it as usual."""

    def __init__(self, name, module):
        self.name = name
        self.module = module

    def find_spec(self, fullname, path, target=None):
        if fullname != self.name:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        return self.module

    def exec_module(self, module):
        pass


def served_module(name):
    """The module a :class:`PreparedModuleFinder` already answers ``import <name>`` with, or None."""
    finder = next((f for f in sys.meta_path if isinstance(f, PreparedModuleFinder) and f.name == name), None)
    return None if finder is None else finder.module


def serve_module(name, module):
    """Put a finder for ``name`` first on ``sys.meta_path`` (once). Returns the module import will give."""
    existing = served_module(name)
    if existing is not None:
        return existing
    sys.meta_path.insert(0, PreparedModuleFinder(name, module))
    return module
