"""Find the user's Scene-Graph-Benchmark checkout (the "SGB host").

The host is never vendored: it is the user's own clone, found from, in order,
an explicit path (``--host-root``), the ``SGB_ROOT`` environment variable, or an
importable ``maskrcnn_benchmark`` package (``setup.py develop`` installs point at the clone).
"""

import importlib.util
import os
from pathlib import Path

HOW_TO_POINT = (
    "Point sgg-plugins at an SGB checkout (the directory holding maskrcnn_benchmark/ and tools/) "
    "with --host-root PATH or by setting SGB_ROOT=PATH."
)

# Maelic/SGG-Benchmark, SGB's maintained successor, renamed the package and replaced the yacs config
# and BoxLists the SGB adapter relies on: a checkout of it given as SGB's is named as such (issue 23).
SGG_BENCHMARK_UNSUPPORTED = (
    "{root} is Maelic/SGG-Benchmark (package sgg_benchmark), which sgg-plugins does not support yet (issue 23): "
    "it runs Scene-Graph-Benchmark.pytorch and forks that keep its maskrcnn_benchmark package and predictor registry"
)


class HostNotFoundError(RuntimeError):
    """No usable SGB checkout was found; the message says where we looked and how to fix it."""


def host_problem(root):
    """What is wrong with ``root`` as an SGB checkout, or None when it looks like one."""
    root = Path(root)
    if not root.is_dir():
        return f"{root} is not a directory"
    if not (root / "maskrcnn_benchmark").exists() and (root / "sgg_benchmark").is_dir():
        return SGG_BENCHMARK_UNSUPPORTED.format(root=root)
    missing = [name for name in ("maskrcnn_benchmark", "tools/relation_train_net.py") if not (root / name).exists()]
    if missing:
        return f"{root} has no {' and no '.join(missing)}"
    return None


def _importable_host_root():
    """Parent directory of an importable ``maskrcnn_benchmark`` package, or None."""
    spec = importlib.util.find_spec("maskrcnn_benchmark")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))).resolve().parent


def locate_host(host_root=None):
    """Absolute path of the SGB checkout, from ``host_root``, else ``$SGB_ROOT``, else the import path.

    Raises HostNotFoundError naming the source that was tried and what is wrong with it.
    """
    if host_root:
        source, root = "--host-root", Path(host_root)
    elif os.environ.get("SGB_ROOT"):
        source, root = "SGB_ROOT", Path(os.environ["SGB_ROOT"])
    else:
        source, root = "the importable maskrcnn_benchmark package", _importable_host_root()
        if root is None:
            raise HostNotFoundError(
                "No SGB host given: no --host-root, SGB_ROOT is unset and maskrcnn_benchmark is not importable. "
                + HOW_TO_POINT
            )
    root = root.expanduser().resolve()
    problem = host_problem(root)
    if problem:
        # Pointing elsewhere is no way out for an unsupported host: its line says what is.
        advice = "" if problem == SGG_BENCHMARK_UNSUPPORTED.format(root=root) else " " + HOW_TO_POINT
        raise HostNotFoundError(f"The SGB host from {source} is unusable: {problem}.{advice}")
    return root
