"""Run the SGB host's own, unmodified ``tools/<name>.py`` with sgg-plugins installed first.

The repo's ``tools/relation_train_net.py`` and ``tools/relation_test_net.py`` call
``run_host_script``. The command line is the host script's (``--config-file``, ``--skip-test``,
opts ``KEY VALUE ...``) plus ``--host-root PATH``, which is consumed here. Under ``torchrun``
(which sets ``LOCAL_RANK``) or ``python -m torch.distributed.launch`` (which passes
``--local-rank=N`` or ``--local_rank N``), the rank is handed to the host as ``--local_rank N``,
the only spelling its argument parser knows.
"""

import os
import random
import runpy
import sys

from ...config import ConfigError
from ...text.weights import CLIPUnavailableError
from ...logs import held_back
from ..common import LOGGER_NAME, set_up_launcher_logging, split_options, stop_with
from ..locate import HostNotFoundError
from . import install
from .nonfinite_loss import NonFiniteLossError
from .preflight import PreflightError, preflight

# Errors in what the user asked for, raised before training starts: a message, not a traceback.
USER_ERRORS = (ConfigError, CLIPUnavailableError)

LAUNCHER_OPTIONS = ("--host-root", "--local_rank", "--local-rank")
LAUNCHER_FLAGS = ("--without-plugin",)
SEED_VARIABLE = "SGG_PLUGINS_SEED"


def split_launcher_args(argv):
    """(host_root or None, local_rank or None, the arguments for the host script, with the plug-in?).

    ``--host-root`` and the local-rank options are taken out wherever they appear, as ``--opt VALUE``
    or ``--opt=VALUE``; the local rank falls back to ``$LOCAL_RANK``.
    """
    values, host_argv = split_options(argv, LAUNCHER_OPTIONS, LAUNCHER_FLAGS, aliases={"--local-rank": "--local_rank"})
    local_rank = values.get("--local_rank", os.environ.get("LOCAL_RANK"))
    if local_rank is not None and not str(local_rank).isdigit():
        raise SystemExit(f"the local rank must be a non-negative integer, got {local_rank!r}")
    return values.get("--host-root"), local_rank, host_argv, not values.get("--without-plugin", False)


def seed_everything_from_environment():
    """Seed Python, NumPy and torch from ``$SGG_PLUGINS_SEED`` when it is set.

    SGB's scripts take no seed; ``sgg-plugins bench`` runs each seed of a variant through this
    variable so that seeds differ in initialisation, sampling and masks, and repeat exactly.
    """
    value = os.environ.get(SEED_VARIABLE)
    if value is None:
        return None
    if not value.isdigit():
        raise SystemExit(f"error: {SEED_VARIABLE} must be a non-negative integer, got {value!r}")
    import numpy as np
    import torch

    seed = int(value)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # seeds every CUDA device too
    return seed


def run_host_script(name, argv):
    """Run ``<host>/tools/<name>.py`` as ``__main__`` with ``argv`` (less the launcher options) after ``install()``.

    Launcher options: ``--host-root PATH``, the local-rank spellings, and ``--without-plugin`` (the
    compatibility layer only, no regularizer and no MODEL.ALIGN/RCL/PROBE keys: the vanilla host).
    Before the host's script runs, ``preflight`` checks the config, checkpoint and dataset it will
    use; bad input stops here with one line.
    """
    host_root, local_rank, host_argv, with_plugin = split_launcher_args(argv)
    if "-h" in host_argv or "--help" in host_argv:
        print(
            f"sgg-plugins launcher for the SGB host's tools/{name}.py: accepts --host-root PATH "
            "(else $SGB_ROOT, else the importable maskrcnn_benchmark); the host's own options follow.\n"
        )
    set_up_launcher_logging()
    with held_back(LOGGER_NAME):  # bad input: its line alone, not the set-up lines before it
        try:
            root = install(host_root, plugin=with_plugin)
        except HostNotFoundError as error:
            raise stop_with(error) from None
        seed_everything_from_environment()
        script = root / "tools" / f"{name}.py"
        if not script.is_file():
            raise stop_with(f"the SGB host at {root} has no tools/{name}.py; is it a Scene-Graph-Benchmark checkout?")
        if not ("-h" in host_argv or "--help" in host_argv):
            try:
                preflight(name, host_argv, world_size=int(os.environ.get("WORLD_SIZE", "1")), plugin=with_plugin)
            except PreflightError as error:
                raise stop_with(error) from None
    if local_rank is not None:
        # First, because everything after the first positional belongs to the host's opts.
        host_argv = ["--local_rank", str(local_rank), *host_argv]
    saved_argv = sys.argv
    sys.argv = [str(script), *host_argv]
    try:
        runpy.run_path(str(script), run_name="__main__")
    except USER_ERRORS as error:
        raise stop_with(error) from None
    except NonFiniteLossError as error:
        # Every process that sees it stops; rank 0 (which holds the loss averaged over all) says why.
        raise stop_with(error) from None
    finally:
        sys.argv = saved_argv
