"""Importing this module installs sgg-plugins for the SGB checkout that imports it.

It is the one line that ``sgg-plugins patch --apply`` adds to the host's
``tools/relation_train_net.py`` and ``tools/relation_test_net.py``, so that the host's own scripts
(run directly, or under torchrun) pick up the plug-in. The line sits before the scripts' first
``maskrcnn_benchmark`` import: the host's ``utils/imports.py`` reads ``torch._six`` at import time.
"""

import sys
from pathlib import Path

from ...logs import keep_root_unconfigured
from ..locate import host_problem
from . import install


def _importing_host_root():
    """The checkout holding the script whose ``import`` statement loaded this module, or None."""
    this_file = Path(__file__).resolve()
    frame = sys._getframe(1)
    while frame is not None:
        filename = frame.f_code.co_filename
        if not filename.startswith("<") and Path(filename).resolve() != this_file:
            # <host>/tools/<script>.py
            root = Path(filename).resolve().parent.parent
            return root if host_problem(root) is None else None
        frame = frame.f_back
    return None


# As the launchers do: a library configuring the root logger (OpenCLIP) would print every host
# line twice.
keep_root_unconfigured()
install(_importing_host_root())
