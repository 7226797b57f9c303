"""Run SGTR's own, unmodified ``tools/train_net.py`` / ``tools/test_net.py`` with sgg-plugins first.

SGTR's scripts are meant to be run from inside an experiment folder of the checkout
(``playground/sgg/<exp>/``), from which they import ``config`` and ``net``. The launcher runs them
from the user's current folder instead (the *run folder*, which must not be inside the checkout:
the host writes a ``log`` symlink there and, on errors, a debug checkpoint), with:

- ``--host-root PATH`` (else ``$SGTR_ROOT``): the checkout;
- ``--experiment DIR``: the experiment folder, absolute or relative to the checkout (default the VG
  experiment ``playground/sgg/detr.res101.c5.one_stage_rel_tfmer``);
- ``--config FILE``: the config module in it (default ``config_vg_sgtr.py`` for the VG experiment,
  ``config.py`` elsewhere), imported as the host's ``config``;
- ``--vg-dir DIR``: a dataset folder in SGB's VG format, read instead of ``<checkout>/datasets/vg``;
  the two class counts (``MODEL.DETR.NUM_CLASSES``, ``MODEL.ROI_RELATION_HEAD.NUM_CLASSES``) are
  then read from its dicts file unless the opts set them;
- ``--without-plugin``: the compatibility layer only (the vanilla host).

Everything else is the host script's own command line (``--resume --eval-only --num-gpus ...``
then ``KEY VALUE`` opts), passed on with two flags added: ``--skip_git_commit`` (the host would
``git commit -a`` in the working directory) and ``--disable_gpu_check`` (it would poll for free
GPUs forever). ``CVPODS_OUTPUT``, which the configs read at import, defaults to ``./output``.
``MODEL.TEST_WEIGHTS``, which ``test_net.py`` reads before it merges the opts, is applied to the
config as soon as it is imported.

With ``--num-gpus`` > 1 the host's ``launch`` spawns workers that re-import the main script in
fresh interpreters: the launcher scripts re-run :func:`run_in_spawned_worker` there (the settings
travel in ``$SGG_PLUGINS_SGTR_LAUNCH``), so every worker has the shims and the same ``config``.
"""

import json
import os
import sys
from pathlib import Path

from ...logs import held_back
from ..common import LOGGER_NAME, set_up_launcher_logging, split_options

SETTINGS_VARIABLE = "SGG_PLUGINS_SGTR_LAUNCH"
DEFAULT_EXPERIMENT = "playground/sgg/detr.res101.c5.one_stage_rel_tfmer"
# The VG experiment's config.py is a symlink to its Open Images config; the VG one has its own name.
DEFAULT_CONFIGS = {"detr.res101.c5.one_stage_rel_tfmer": "config_vg_sgtr.py"}
LAUNCHER_OPTIONS = ("--host-root", "--experiment", "--config", "--vg-dir")
LAUNCHER_FLAGS = ("--without-plugin",)
# Added to the host's arguments: never `git commit -a` in the user's tree, never wait for free GPUs.
FORCED_HOST_FLAGS = ("--skip_git_commit", "--disable_gpu_check")
# Opts the host reads from its config before it merges the command line.
EARLY_OPTS = ("MODEL.TEST_WEIGHTS",)
HOST_SCRIPTS = ("train_net", "test_net")


class LaunchError(ValueError):
    """Something in the launcher's command line or environment is unusable; one line says what."""


def host_arguments(argv):
    """(launcher values, the host script's argv): launcher options out, the forced flags in.

    The forced flags go first: everything after the first positional is the host's ``KEY VALUE``
    opts (argparse REMAINDER).
    """
    values, rest = split_options(argv, LAUNCHER_OPTIONS, LAUNCHER_FLAGS)
    forced = [flag for flag in FORCED_HOST_FLAGS if flag not in rest]
    return values, forced + rest


def opts_of(host_argv):
    """The ``KEY VALUE`` pairs of a host argv (after its options) as a dict."""
    flags_with_value = {"--num-gpus", "--num-machines", "--machine-rank", "--dist-url", "--start-iter", "--end-iter"}
    tokens = list(host_argv)
    i = 0
    while i < len(tokens) and tokens[i].startswith("-"):
        i += 1 if "=" in tokens[i] or tokens[i] not in flags_with_value else 2
    opts = tokens[i:]
    if len(opts) % 2:
        raise LaunchError(f"the opts after the options must be KEY VALUE pairs, got an odd number: {' '.join(opts)}")
    return dict(zip(opts[0::2], opts[1::2]))


def with_class_counts(host_argv, vg_dir):
    """``host_argv`` plus the dataset's class-count opts that it does not set itself."""
    from .data import class_count_opts

    given = opts_of(host_argv)
    counts = class_count_opts(vg_dir)
    missing = [item for key, value in zip(counts[0::2], counts[1::2]) if key not in given for item in (key, value)]
    return [*host_argv, *missing]  # opts come last on the host's command line


def resolve_settings(name, values, cwd=None, environ=None):
    """The settings of a launch, checked: every problem is a :class:`LaunchError` naming the fix."""
    from . import locate_host

    environ = os.environ if environ is None else environ
    cwd = Path(cwd or os.getcwd()).resolve()
    root = locate_host(values.get("--host-root"))
    if cwd == root or root in cwd.parents:
        raise LaunchError(
            f"the run folder {cwd} is inside the SGTR checkout {root}; run from a folder outside it (the host writes "
            "a `log` link and debug checkpoints into the working directory, and the checkout must stay untouched)"
        )
    experiment = Path(values.get("--experiment", DEFAULT_EXPERIMENT)).expanduser()
    experiment = (experiment if experiment.is_absolute() else root / experiment).resolve()
    if not (experiment / "net.py").is_file():
        raise LaunchError(f"--experiment {experiment} has no net.py: give an experiment folder of the checkout "
                          f"(default {DEFAULT_EXPERIMENT})")
    config = values.get("--config", DEFAULT_CONFIGS.get(experiment.name, "config.py"))
    if not (experiment / config).is_file():
        raise LaunchError(f"--config {config}: no such file in {experiment}")
    vg_dir = values.get("--vg-dir")
    if vg_dir:
        from .data import vg_folders

        try:
            vg_folders(vg_dir)
        except FileNotFoundError as error:
            raise LaunchError(str(error)) from None
        vg_dir = str(Path(vg_dir).resolve())
    output = environ.get("CVPODS_OUTPUT") or str(cwd / "output")
    return {
        "script": name, "host_root": str(root), "experiment": str(experiment), "config": config,
        "vg_dir": vg_dir, "plugin": not values.get("--without-plugin", False), "cvpods_output": output,
    }


def apply_environment(settings):
    """Environment the host and every spawned worker read."""
    from .data import VG_DIR_VARIABLE

    os.environ["CVPODS_OUTPUT"] = settings["cvpods_output"]
    if settings["vg_dir"]:
        os.environ[VG_DIR_VARIABLE] = settings["vg_dir"]
    os.environ[SETTINGS_VARIABLE] = json.dumps(settings)


def import_experiment_config(settings):
    """Import the experiment's config module as ``config`` (what the host's scripts import)."""
    import importlib.util

    experiment = settings["experiment"]
    if experiment not in sys.path:
        sys.path.insert(1, experiment)  # after the checkout; the experiment's `net` imports `modeling` from here
    spec = importlib.util.spec_from_file_location("config", os.path.join(experiment, settings["config"]))
    module = importlib.util.module_from_spec(spec)
    sys.modules["config"] = module
    spec.loader.exec_module(module)
    return module.config


def apply_early_opts(config, opts):
    """Set the opts the host reads before merging its command line (``test_net.py``'s TEST_WEIGHTS)."""
    early = [item for key in EARLY_OPTS if key in opts for item in (key, opts[key])]
    if early:
        config.merge_from_list(early)


def fall_back_to_cpu(config):
    """``MODEL.DEVICE`` cpu when the config names CUDA and there is no GPU (opts can still set it)."""
    import logging

    import torch

    device = str(config.MODEL.DEVICE)
    if device.startswith("cuda") and not torch.cuda.is_available():
        config.MODEL.DEVICE = "cpu"
        logging.getLogger("sgg_plugins").warning(
            "sgg-plugins: MODEL.DEVICE is %r but no GPU is available; running on cpu", device)


def decoded(value):
    """An opt's value as the host reads it (a Python literal, else the string itself)."""
    import ast

    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value


def check_weights(script, config, opts):
    """One line, before the host starts, when the checkpoint the run would load is not there."""
    if script == "test_net":
        weights = config.MODEL.TEST_WEIGHTS
        if weights and not os.path.exists(weights):
            raise LaunchError(f"MODEL.TEST_WEIGHTS {weights} does not exist: pass MODEL.TEST_WEIGHTS <checkpoint.pth> "
                              "(its folder must hold the run's config.json, as train_net.py writes it)")
        return
    weights = decoded(opts["MODEL.WEIGHTS"]) if "MODEL.WEIGHTS" in opts else config.MODEL.WEIGHTS
    if weights and "://" not in weights and not os.path.exists(weights):
        raise LaunchError(f"MODEL.WEIGHTS {weights} does not exist: pass MODEL.WEIGHTS /path/to/vg_detr.pth (SGTR's "
                          "pre-trained entity DETR) or MODEL.WEIGHTS '' to start from scratch")


# sgg-plugins nodes that exist on SGB only (docs/sgtr.md says why each is not attached to SGTR).
SGB_ONLY_NODES = ("MODEL.RCL", "MODEL.PROBE", "MODEL.CLIPMATCH", "MODEL.MRC")


def check_opt_keys(config, opts, plugin):
    """One line for an opt naming a key the config lacks, before the host's merge asserts on it."""
    for key in opts:
        node = config
        for part in key.split("."):
            if not hasattr(node, "keys") or part not in node:
                break
            node = node[part]
        else:
            continue
        if key.startswith(SGB_ONLY_NODES):
            raise LaunchError(f"{key}: only MODEL.ALIGN of sgg-plugins exists on SGTR (docs/sgtr.md says why "
                              f"{'.'.join(key.split('.')[:2])} is not attached); drop the opt")
        if key.startswith("MODEL.ALIGN") and not plugin:
            raise LaunchError(f"{key}: --without-plugin runs the vanilla host, which has no MODEL.ALIGN; "
                              "drop the opt or --without-plugin")
        raise LaunchError(f"{key} is not a key of this experiment's config: check its spelling against the "
                          "experiment's config file")


def prepare(settings, host_argv):
    """Install sgg-plugins for the host and import the experiment's config. Returns the host script path."""
    from . import install

    install(settings["host_root"])
    config = import_experiment_config(settings)
    opts = opts_of(host_argv)
    if settings["plugin"]:
        from .plugin import register

        register(config)
    check_opt_keys(config, opts, settings["plugin"])
    fall_back_to_cpu(config)
    apply_early_opts(config, opts)
    check_weights(settings["script"], config, opts)
    return os.path.join(settings["host_root"], "tools", settings["script"] + ".py")


def execute(script, namespace, run_name):
    """Run the host script's code in ``namespace`` (the launcher's own module globals).

    The launcher's module keeps its ``__file__``, so workers that ``multiprocessing`` spawns re-run
    the launcher (which installs the shims) rather than the host script; the code keeps the host
    script's file name, so tracebacks point at the host and the shims recognise it as host code.
    """
    with open(script) as f:
        code = compile(f.read(), script, "exec")
    namespace["__name__"] = run_name
    exec(code, namespace)


def run_host_script(name, argv, namespace):
    """Run ``<host>/tools/<name>.py`` as ``__main__`` in ``namespace`` with ``argv`` rewritten."""
    from ...config import ConfigError
    from . import HostNotFoundError

    values, host_argv = host_arguments(argv)
    if "-h" in argv or "--help" in argv:
        print(f"sgg-plugins launcher for SGTR's tools/{name}.py. Launcher options: --host-root PATH (else $SGTR_ROOT), "
              f"--experiment DIR (default {DEFAULT_EXPERIMENT}), --config FILE, --vg-dir DIR, --without-plugin; "
              f"added for the host: {' '.join(FORCED_HOST_FLAGS)}. The host's own options follow.\n")
    set_up_launcher_logging()
    with held_back(LOGGER_NAME):  # bad input: its line alone, not the set-up lines before it
        try:
            settings = resolve_settings(name, values)
            apply_environment(settings)
            if settings["vg_dir"]:
                host_argv = with_class_counts(host_argv, settings["vg_dir"])
            script = prepare(settings, host_argv)
        except (HostNotFoundError, LaunchError, ConfigError) as error:
            raise SystemExit(f"error: {error}") from None
    saved_argv = sys.argv
    sys.argv = [script, *host_argv]
    try:
        execute(script, namespace, "__main__")
    except ConfigError as error:
        raise SystemExit(f"error: {error}") from None
    finally:
        sys.argv = saved_argv


def run_in_spawned_worker(namespace):
    """In a worker the host's ``launch`` spawned: the same preparation, then the host script's
    definitions (not its main block) in ``namespace``, which multiprocessing reads ``main`` from."""
    settings = json.loads(os.environ[SETTINGS_VARIABLE])
    script = prepare(settings, sys.argv[1:])
    execute(script, namespace, "__mp_main__")
