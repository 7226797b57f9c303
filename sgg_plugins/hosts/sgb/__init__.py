"""The Scene-Graph-Benchmark.pytorch (SGB) host adapter.

``install()`` prepares this process to run the user's unmodified SGB checkout with the plug-in:
it must run before anything imports ``maskrcnn_benchmark``. The launchers in ``tools/`` and the
one-line patch (``sgg_plugins.hosts.sgb.autoinstall``) call it.
"""

from ..common import put_host_first
from ..locate import locate_host


def install(host_root=None, plugin=True):
    """Make the SGB host at ``host_root`` (else ``$SGB_ROOT``, else the importable one) run with sgg-plugins.

    Puts the checkout first on ``sys.path``, applies the run-time compatibility shims, provides
    ``maskrcnn_benchmark._C`` from torchvision when the host's extension is not built, installs the
    data shims, skips the frozen detector's work that ground-truth-box modes never read (bit-identical,
    see ``unread_work``), registers the plug-in's config nodes and predictors, and makes
    ``cfg.freeze()`` fall back to MODEL.DEVICE cpu on a machine without a GPU. Idempotent. Returns
    the host root.

    ``plugin=False`` installs the compatibility layer alone: the vanilla host, as it would run on an
    old PyTorch, e.g. to check that a checkpoint trained with a regularizer evaluates without us.
    """
    from .compat import install_compat, watch_device
    from .ops import install_ops

    root = locate_host(host_root)
    put_host_first(root, "maskrcnn_benchmark")

    install_compat()
    install_ops(root)

    from .data import install_data_shims

    install_data_shims()

    from .unread_work import install_unread_work_skips

    install_unread_work_skips()

    if plugin:
        from .plugin import register

        register()

    from maskrcnn_benchmark.config import cfg

    watch_device(cfg)
    return root
