"""Run Maelic/SGG-Benchmark's own, unmodified ``tools/relation_train_net_hydra.py`` (training, and
evaluation with ``--eval-only``) or ``tools/relation_eval_hydra.py`` (evaluation of a run directory)
with sgg-plugins installed first.

The command line is the host script's own: its options (``--config-path``, ``--config-name``,
``--task``, ``--eval-only``, ``--checkpoint``, ``--skip-test``, ...) and Hydra overrides
(``solver.max_iter=2``, ``++model.roi_relation_head.use_gt_box=true``), plus two launcher options
taken out here: ``--host-root PATH`` (else ``$SGGB_ROOT``, else an importable ``sgg_benchmark``) and
``--without-plugin`` (the shims only: the vanilla host).

The host composes its YAML with Hydra, which refuses to override a key the YAML lacks unless the
override is written ``+key=...`` / ``++key=...``, and the objectives' nodes are in the host's schema,
not in its YAML files. So that ``model.align.enabled=true`` works as the host's users write
overrides, an override of an objective's key without a prefix is passed on as ``++`` (add or
override); its value is then type-checked by the schema and validated before data is loaded.
"""

import re
import runpy
import sys

from ...config import ConfigError
from ..common import set_up_launcher_logging, split_options
from ..locate import HostNotFoundError
from ..structured_config import lowercase_key_names
from .schema import SCHEMA_NODES

LAUNCHER_OPTIONS = ("--host-root",)
LAUNCHER_FLAGS = ("--without-plugin",)
HOST_SCRIPTS = {"train": "relation_train_net_hydra", "test": "relation_eval_hydra"}
_OBJECTIVE_OVERRIDE = re.compile(r"^model\.(?:%s)\.[a-z_]+=" % "|".join(name.lower() for name in SCHEMA_NODES))


def host_arguments(argv, plugin=True):
    """The host script's argv: objectives' overrides without a Hydra prefix get ``++``."""
    if not plugin:
        return list(argv)
    return ["++" + token if _OBJECTIVE_OVERRIDE.match(token) else token for token in argv]


def run_host_script(name, argv):
    """Run ``<host>/tools/<script>.py`` as ``__main__`` with ``argv`` (less the launcher options) after
    ``install()``. Errors in what the user asked for stop with one line (exit status 1)."""
    from . import install

    values, rest = split_options(argv, LAUNCHER_OPTIONS, LAUNCHER_FLAGS)
    plugin = not values.get("--without-plugin", False)
    if "-h" in rest or "--help" in rest:
        print(f"sgg-plugins launcher for SGG-Benchmark's tools/{HOST_SCRIPTS[name]}.py: accepts --host-root PATH "
              "(else $SGGB_ROOT, else the importable sgg_benchmark) and --without-plugin; model.<objective>.<key>=... "
              "overrides are passed on as ++model.<objective>.<key>=.... The host's own options follow.\n")
    set_up_launcher_logging()
    try:
        root = install(values.get("--host-root"), plugin=plugin)
    except HostNotFoundError as error:
        raise SystemExit(f"error: {error}") from None
    script = root / "tools" / f"{HOST_SCRIPTS[name]}.py"
    saved_argv = sys.argv
    sys.argv = [str(script), *host_arguments(rest, plugin)]
    try:
        runpy.run_path(str(script), run_name="__main__")
    except ConfigError as error:
        # The objectives' messages name keys as SGB spells them (MODEL.RCL.X); this host's users write model.rcl.x.
        raise SystemExit(f"error: {lowercase_key_names(str(error))}") from None
    finally:
        sys.argv = saved_argv

