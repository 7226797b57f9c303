"""Find the user's checkout of a host codebase, never vendored.

Each host is found from, in order, an explicit path (``--host-root``), its environment variable,
or its importable package (``setup.py develop`` / ``pip install -e`` installs point at the clone).
A :class:`HostLayout` says what a checkout of that host must hold; ``SGB`` is
Scene-Graph-Benchmark.pytorch (``locate_host`` finds it), other hosts declare theirs.
"""

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Tuple


@dataclass(frozen=True)
class HostLayout:
    name: str  # as the messages name the host
    variable: str  # the environment variable holding the checkout's path
    package: str  # the importable package at the checkout's top level
    required: Tuple[str, ...]  # paths a checkout holds, relative to its root

    @property
    def how_to_point(self):
        return (f"Point sgg-plugins at an {self.name} checkout (the directory holding {' and '.join(self.required)}) "
                f"with --host-root PATH or by setting {self.variable}=PATH.")


SGB = HostLayout("SGB", "SGB_ROOT", "maskrcnn_benchmark", ("maskrcnn_benchmark", "tools/relation_train_net.py"))
HOW_TO_POINT = (
    "Point sgg-plugins at an SGB checkout (the directory holding maskrcnn_benchmark/ and tools/) "
    "with --host-root PATH or by setting SGB_ROOT=PATH."
)

# Maelic/SGG-Benchmark, SGB's maintained successor, renamed the package and replaced the yacs config
# and BoxLists the SGB adapter relies on: a checkout of it given to the SGB launchers is sent to its own.
SGG_BENCHMARK_UNSUPPORTED = (
    "{root} is Maelic/SGG-Benchmark (package sgg_benchmark), a host of its own: run it with "
    "tools/sgg_benchmark_train_net.py (docs/sgg_benchmark.md; so far model.align on its MotifPredictor, issue 23); "
    "the SGB launchers run Scene-Graph-Benchmark.pytorch and forks that keep its maskrcnn_benchmark package and "
    "predictor registry"
)


class HostNotFoundError(RuntimeError):
    """No usable checkout was found; the message says where we looked and how to fix it."""


def host_problem(root, layout=SGB):
    """What is wrong with ``root`` as a checkout of ``layout``'s host, or None when it looks like one."""
    root = Path(root)
    if not root.is_dir():
        return f"{root} is not a directory"
    if layout is SGB and not (root / SGB.package).exists() and (root / "sgg_benchmark").is_dir():
        return SGG_BENCHMARK_UNSUPPORTED.format(root=root)
    missing = [name for name in layout.required if not (root / name).exists()]
    if missing:
        return f"{root} has no {' and no '.join(missing)}"
    return None


def _importable_host_root(package="maskrcnn_benchmark"):
    """Parent directory of an importable ``package``, found without importing it, or None."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))).resolve().parent


def locate_checkout(layout, host_root=None, how_to_point=None):
    """Absolute path of ``layout``'s checkout, from ``host_root``, else its environment variable, else
    the import path. Raises HostNotFoundError naming the source that was tried and what is wrong."""
    how_to_point = how_to_point or layout.how_to_point
    if host_root:
        source, root = "--host-root", Path(host_root)
    elif os.environ.get(layout.variable):
        source, root = layout.variable, Path(os.environ[layout.variable])
    else:
        source, root = f"the importable {layout.package} package", _importable_host_root(layout.package)
        if root is None:
            raise HostNotFoundError(
                f"No {layout.name} host given: no --host-root, {layout.variable} is unset and {layout.package} "
                "is not importable. " + how_to_point
            )
    root = root.expanduser().resolve()
    problem = host_problem(root, layout)
    if problem:
        # Pointing elsewhere is no way out for an unsupported host: its line says what is.
        advice = "" if problem == SGG_BENCHMARK_UNSUPPORTED.format(root=root) else " " + how_to_point
        raise HostNotFoundError(f"The {layout.name} host from {source} is unusable: {problem}.{advice}")
    return root


def locate_host(host_root=None):
    """Absolute path of the SGB checkout, from ``host_root``, else ``$SGB_ROOT``, else the import path.

    Raises HostNotFoundError naming the source that was tried and what is wrong with it.
    """
    return locate_checkout(SGB, host_root, HOW_TO_POINT)
