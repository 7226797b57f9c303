"""The SGTR host adapter (Scarecrow0/SGTR: a one-stage DETR-style scene graph generator on a
vendored cvpods).

``install()`` prepares this process to run the user's unmodified, unbuilt SGTR checkout: it must
run before anything imports ``cvpods``. The launcher (``tools/sgtr_train_net.py``,
``tools/sgtr_test_net.py``) calls it in the main process and in every worker the host spawns.
"""

import os
from pathlib import Path

from ..common import put_host_first

HOW_TO_POINT = (
    "Point sgg-plugins at an SGTR checkout (the directory holding cvpods/ and tools/train_net.py) "
    "with --host-root PATH or by setting SGTR_ROOT=PATH."
)
ROOT_VARIABLE = "SGTR_ROOT"


class HostNotFoundError(RuntimeError):
    """No usable SGTR checkout was found; the message says where we looked and how to fix it."""


def locate_host(host_root=None):
    """Absolute path of the SGTR checkout, from ``host_root``, else ``$SGTR_ROOT``."""
    if host_root:
        source, root = "--host-root", Path(host_root)
    elif os.environ.get(ROOT_VARIABLE):
        source, root = ROOT_VARIABLE, Path(os.environ[ROOT_VARIABLE])
    else:
        raise HostNotFoundError("No SGTR host given: no --host-root and SGTR_ROOT is unset. " + HOW_TO_POINT)
    root = root.expanduser().resolve()
    missing = [name for name in ("cvpods/__init__.py", "tools/train_net.py") if not (root / name).is_file()]
    if not root.is_dir():
        problem = "it is not a directory"
    elif missing:
        problem = f"it has no {' and no '.join(missing)}"
    else:
        return root
    raise HostNotFoundError(f"The SGTR host {root} from {source} is unusable: {problem}. " + HOW_TO_POINT)


def install(host_root=None):
    """Make the SGTR checkout at ``host_root`` (else ``$SGTR_ROOT``) importable on this PyTorch.

    Puts the checkout first on ``sys.path``, applies the compatibility shims, serves ``cvpods._C``
    from torchvision when cvpods' extension is not built, and applies the data shims. Idempotent.
    Returns the host root.
    """
    from .compat import install_compat
    from .ops import install_ops

    root = locate_host(host_root)
    put_host_first(root, "cvpods")
    install_compat(root)
    install_ops(root)

    from .data import install_data_shims

    install_data_shims(root)
    return root
