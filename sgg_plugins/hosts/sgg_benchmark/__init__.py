"""The Maelic/SGG-Benchmark host adapter ("SGGB": package ``sgg_benchmark``, Hydra + OmegaConf
structured configs with lowercase keys, YOLO detectors).

``install()`` prepares this process to run the user's unmodified checkout with the plug-in: it
must run before the host's scripts import ``sgg_benchmark``'s model builders. The launcher
(``tools/sgg_benchmark_train_net.py``) calls it.
"""

from ..common import put_host_first
from ..locate import HostLayout, locate_checkout

LAYOUT = HostLayout("SGG-Benchmark", "SGGB_ROOT", "sgg_benchmark",
                    ("sgg_benchmark/config/hydra_config.py", "tools/relation_train_net_hydra.py"))


def locate_host(host_root=None):
    """Absolute path of the SGG-Benchmark checkout, from ``host_root``, else ``$SGGB_ROOT``, else an
    importable ``sgg_benchmark``. Raises HostNotFoundError naming the source and what is wrong."""
    return locate_checkout(LAYOUT, host_root)


def install(host_root=None, plugin=True):
    """Make the SGG-Benchmark checkout at ``host_root`` run with sgg-plugins. Idempotent.

    Puts the checkout first on ``sys.path``, applies the CPU and offline shims (``compat``) and, with
    ``plugin``, adds the objectives' nodes to the host's config schema and attaches the objectives
    when its relation predictor is built (``plugin``). ``plugin=False`` is the vanilla host with the
    shims only. Returns the host root.
    """
    from .compat import install_compat

    root = locate_host(host_root)
    put_host_first(root, "sgg_benchmark")
    install_compat()
    if plugin:
        from .plugin import register

        register()
    return root
