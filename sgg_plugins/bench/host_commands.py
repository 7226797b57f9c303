"""How bench runs each host: its launchers' command lines, the seed mechanism, the checks of a plan.

``--host`` picks one of :data:`LAUNCHES`; the runner (``runner.py``) only goes through their methods.

**SGB** (``tools/relation_train_net.py`` / ``tools/relation_test_net.py``). Each run trains with
``--skip-test`` and then runs the test script on the same ``OUTPUT_DIR``: the host's checkpointer
loads ``OUTPUT_DIR/last_checkpoint`` in preference to ``MODEL.WEIGHT``, so the test evaluates the
model just trained and writes ``inference/<test set>/result_dict.pytorch``. The commands run in
``--cwd`` (default ``$SGB_ROOT``, else the current folder): SGB reads its zero-shot triplets and
relative config paths from there; when that folder is an SGB checkout and ``SGB_ROOT`` is unset,
the runs get ``SGB_ROOT`` set to it so that the launcher finds the host. Every host command gets
``TEST.ALLOW_LOAD_FROM_CACHE False`` (the host's default is True: its ``inference()`` then
evaluates the predictions in an ``eval_results.pytorch`` left in the output folder instead of
running the model). The host has no seed option: the seed reaches the launcher as
``SGG_PLUGINS_SEED`` (the launcher seeds ``random``, numpy and torch from it before the host starts).

**SGTR** (``tools/sgtr_train_net.py`` / ``tools/sgtr_test_net.py``, the checkout in ``$SGTR_ROOT``;
``--experiment``, ``--config-file`` (the launcher's ``--config``) and ``--vg-dir`` go to both).
Built-in variants are ``baseline`` and ``align``: MODEL.ALIGN is the one objective SGTR has. Each
run runs in its own run folder (the host writes a ``log`` link into its working directory, which
runs at once would fight over), so paths in the opts must be absolute. The seed is the host's own
``SEED`` opt: cvpods' ``default_setup`` seeds ``random``, numpy and torch with it and ``config.json``
records it. Training gets ``--resume`` only when an interrupted attempt left ``last_checkpoint``
(on a fresh run ``--resume`` would also take the optimizer state and iteration of a pre-trained
``MODEL.WEIGHTS``). The test gets ``MODEL.TEST_WEIGHTS <run>/model_final.pth`` and not the base
opts' ``MODEL.WEIGHTS``: ``test_net.py`` evaluates the ``MODEL.WEIGHTS`` of its opts when they name
one. SGTR's evaluator has no prediction cache; its result files land in the run folder itself,
where training's own evaluation writes them too.

**SGG-Benchmark** (``tools/sgg_benchmark_train_net.py`` / ``tools/sgg_benchmark_test_net.py``, the
checkout in ``$SGGB_ROOT``). ``--config-file`` is one of its Hydra configs (``configs/hydra/PSG/
MotifPredictor.yaml``: its folder and name become ``--config-path`` / ``--config-name``) and ``--task``
its task. Opts are KEY VALUE pairs as for the other hosts; each pair is passed on as the Hydra
override ``KEY=VALUE`` (``++solver.max_epoch 2`` -> ``++solver.max_epoch=2``), the built-in variants
in its lowercase spelling (``model.align.enabled true``). The seed is the host's own ``seed`` key
(its scripts call ``set_seed(cfg.seed)``). Each run runs in its own run folder: the host's relative
``output_dir``, ``glove_dir`` and detector paths are taken from the working directory. Training gets
``--skip-test``; the test runs the host's test script on the run folder (``--checkpoint-dir``: its
saved config and latest checkpoint) with ``--save-predictions --output-dir <run>/inference``, where its
evaluator writes the result file; the ``predictions.pth`` it leaves there would be evaluated instead
of the model by a later test with ``test.allow_load_from_cache``, and is deleted first like every
evaluation file.

For every host the seed is also ``PYTHONHASHSEED``, and the test stage first deletes the evaluation
files a previous evaluation left, so a run only ever reports an evaluation its test computed.
"""

import os
from pathlib import Path

from .plan import DEFAULT_VARIANTS, SGG_BENCHMARK_VARIANTS, SGTR_VARIANTS, BenchError, opts_to_dict

SEED_ENV = "SGG_PLUGINS_SEED"
# SGB's inference() re-evaluates a cached eval_results.pytorch when this is True (its default).
CACHE_KEY = "TEST.ALLOW_LOAD_FROM_CACHE"
NO_CACHE_OPTS = [CACHE_KEY, "False"]


def _without_keys(opts, keys):
    """``[KEY, VALUE, ...]`` less the pairs whose key is in ``keys``."""
    return [item for key, value in zip(opts[::2], opts[1::2]) if key not in keys for item in (key, value)]


class SgbLaunch:
    """How bench runs Scene-Graph-Benchmark (see the module docstring)."""

    name = "sgb"
    scripts = ("relation_train_net.py", "relation_test_net.py")
    default_variants = DEFAULT_VARIANTS
    # What a pasted command line needs besides the folder and the GPU.
    shell_variables = (SEED_ENV, "PYTHONHASHSEED")

    def __init__(self, args):
        self.shared_cwd = Path(args.cwd or os.environ.get("SGB_ROOT") or os.getcwd()).resolve()
        self.host_root = self.shared_cwd
        self.config_file = args.config_file
        if args.experiment or args.vg_dir:
            raise BenchError("--experiment and --vg-dir are options of SGTR's launchers: add --host sgtr")

    def base_plan(self, base_opts):
        return {"config_file": self.config_file, "base_opts": base_opts}

    def bench_record(self):
        return {"cwd": str(self.shared_cwd)}

    def cwd(self, run):
        return self.shared_cwd

    def check(self, base_opts, variants):
        if not self.config_file:
            raise BenchError("--config-file is required with --host sgb (the host config file, e.g. "
                             "$SGB_ROOT/configs/e2e_relation_X_101_32_8_FPN_1x.yaml)")
        for opts in [base_opts] + list(variants.values()):
            if opts_to_dict(opts).get(CACHE_KEY, "False") != "False":
                raise BenchError(f"do not pass {CACHE_KEY} {opts_to_dict(opts)[CACHE_KEY]}: bench always runs with "
                                 f"{CACHE_KEY} False so that no run evaluates predictions it did not make")
        if not self.shared_cwd.is_dir():
            raise BenchError(f"--cwd {self.shared_cwd} is not a folder")
        if not (self.shared_cwd / self.config_file).is_file():
            raise BenchError(f"config file {self.config_file} not found from {self.shared_cwd} "
                             f"(relative paths are taken from --cwd, default $SGB_ROOT)")

    def command(self, run, stage):
        extra = ["--skip-test"] if stage == "train" else []
        opts = run.plan["base_opts"] + run.plan["variant_opts"] + NO_CACHE_OPTS + ["OUTPUT_DIR", str(run.folder)]
        return [run.bench.python, str(run.bench.script(stage)), "--config-file", self.config_file] + extra + opts

    def extra_env(self, run, environ):
        """Variables a run gets on top of ``environ``: the seed, which the launcher reads."""
        extra = {SEED_ENV: str(run.seed)}
        if "SGB_ROOT" not in environ and (self.shared_cwd / "maskrcnn_benchmark").is_dir():
            # Run from inside an SGB checkout: tell the launcher that this is the host.
            extra["SGB_ROOT"] = str(self.shared_cwd)
        return extra


class RunFolderLaunch:
    """What SGTR and SGG-Benchmark share: each run runs in its own run folder, the launcher gets
    ``launcher_args``, and ``check`` sets ``host_root`` to the checkout it found."""

    host_root = None

    def base_plan(self, base_opts):
        return {"host": self.name, "launcher_args": self.launcher_args, "base_opts": base_opts}

    def bench_record(self):
        return {"launcher_args": self.launcher_args, "host_root": str(self.host_root)}

    def cwd(self, run):
        return run.folder


class SgtrLaunch(RunFolderLaunch):
    """How bench runs SGTR (see the module docstring)."""

    name = "sgtr"
    scripts = ("sgtr_train_net.py", "sgtr_test_net.py")
    default_variants = SGTR_VARIANTS
    shell_variables = ("SGTR_ROOT", "PYTHONHASHSEED")
    # Set by bench for every run: the seed, the run's folder and the checkpoint its test evaluates.
    BENCH_KEYS = ("SEED", "OUTPUT_DIR", "MODEL.TEST_WEIGHTS")

    def __init__(self, args):
        if args.cwd:
            raise BenchError("--cwd is for SGB: each SGTR run runs in its own run folder")
        self.launcher_args = []
        for option, value in (("--experiment", args.experiment), ("--config", args.config_file),
                              ("--vg-dir", args.vg_dir and str(Path(args.vg_dir).resolve()))):
            if value:
                self.launcher_args += [option, value]
        self.out = Path(args.out).resolve()

    def check(self, base_opts, variants):
        from ..config import ConfigError
        from ..hosts.sgtr import HostNotFoundError
        from ..hosts.sgtr.launch import LaunchError, decoded, resolve_settings

        values = dict(zip(self.launcher_args[::2], self.launcher_args[1::2]))
        try:
            # The launcher's own checks: checkout, experiment, config module, dataset; the run folders
            # (under --out) must be outside the checkout.
            self.host_root = resolve_settings("train_net", values, cwd=self.out)["host_root"]
        except (HostNotFoundError, LaunchError, ConfigError) as error:
            raise BenchError(str(error)) from None
        for opts in [base_opts] + list(variants.values()):
            settings = opts_to_dict(opts)
            for key in self.BENCH_KEYS:
                if key in settings:
                    raise BenchError(f"do not pass {key}: bench sets SEED from --seeds, OUTPUT_DIR to "
                                     f"<out>/<variant>/seed<k> and MODEL.TEST_WEIGHTS to that run's model_final.pth")
            test_sets = decoded(settings.get("DATASETS.TEST", "()"))
            if isinstance(test_sets, (list, tuple)) and len(test_sets) > 1:
                raise BenchError(f"DATASETS.TEST {settings['DATASETS.TEST']}: give one test set; SGTR's evaluator "
                                 f"writes every test set's result_dict.pytorch to the same file")
            weights = decoded(settings.get("MODEL.WEIGHTS", ""))
            if isinstance(weights, str) and weights and "://" not in weights:
                if not os.path.isabs(weights):
                    raise BenchError(f"MODEL.WEIGHTS {weights}: give an absolute path (each SGTR run runs in its "
                                     f"own run folder)")
                if not os.path.exists(weights):
                    raise BenchError(f"MODEL.WEIGHTS {weights} does not exist")

    def command(self, run, stage):
        opts = run.plan["base_opts"] + run.plan["variant_opts"]
        flags = []
        if stage == "train":
            if (run.folder / "last_checkpoint").exists():
                flags = ["--resume"]  # an interrupted attempt: go on from its last checkpoint
        else:
            from .results_sgtr import FINAL_CHECKPOINT

            opts = _without_keys(opts, {"MODEL.WEIGHTS"}) + ["MODEL.TEST_WEIGHTS", str(run.folder / FINAL_CHECKPOINT)]
        return [run.bench.python, str(run.bench.script(stage)), *self.launcher_args, *flags, *opts,
                "SEED", str(run.seed), "OUTPUT_DIR", str(run.folder)]

    def extra_env(self, run, environ):
        """None: the seed is an opt and the launcher finds the checkout in ``$SGTR_ROOT``."""
        return {}


class SggBenchmarkLaunch(RunFolderLaunch):
    """How bench runs Maelic/SGG-Benchmark (see the module docstring)."""

    name = "sgg-benchmark"
    scripts = ("sgg_benchmark_train_net.py", "sgg_benchmark_test_net.py")
    default_variants = SGG_BENCHMARK_VARIANTS
    shell_variables = ("SGGB_ROOT", "PYTHONHASHSEED")
    TASKS = ("predcls", "sgcls", "sgdet")
    # Set by bench for every run, under any of Hydra's prefixes.
    BENCH_KEYS = ("seed", "output_dir")

    def __init__(self, args):
        if args.cwd or args.experiment or args.vg_dir:
            raise BenchError("--cwd, --experiment and --vg-dir are not options of SGG-Benchmark's launchers")
        self.config_file = args.config_file
        self.task = args.task
        self.launcher_args = []
        if self.config_file:
            config = Path(self.config_file).resolve()
            self.launcher_args = ["--config-path", str(config.parent), "--config-name", config.stem,
                                  "--task", self.task or ""]

    def check(self, base_opts, variants):
        from ..hosts.locate import HostNotFoundError
        from ..hosts.sgg_benchmark import locate_host

        if not self.config_file:
            raise BenchError("--config-file is required with --host sgg-benchmark (one of its Hydra configs, e.g. "
                             "$SGGB_ROOT/configs/hydra/PSG/MotifPredictor.yaml)")
        if not Path(self.config_file).is_file():
            raise BenchError(f"config file {self.config_file} not found")
        if self.task not in self.TASKS:
            raise BenchError(f"--task is required with --host sgg-benchmark: one of {', '.join(self.TASKS)}")
        try:
            self.host_root = locate_host()
        except HostNotFoundError as error:
            raise BenchError(str(error)) from None
        for opts in [base_opts] + list(variants.values()):
            for key in opts[::2]:
                if key.lstrip("+") in self.BENCH_KEYS:
                    raise BenchError(f"do not pass {key}: bench sets seed from --seeds and output_dir to "
                                     f"<out>/<variant>/seed<k>")

    def command(self, run, stage):
        if stage == "test":
            return [run.bench.python, str(run.bench.script(stage)), "--checkpoint-dir", str(run.folder),
                    "--task", self.task, "--save-predictions", "--output-dir", str(run.folder / "inference")]
        opts = run.plan["base_opts"] + run.plan["variant_opts"]
        overrides = [f"{key}={value}" for key, value in zip(opts[::2], opts[1::2])]
        return [run.bench.python, str(run.bench.script(stage)), *self.launcher_args, "--skip-test", *overrides,
                f"++seed={run.seed}", f"++output_dir={run.folder}"]

    def extra_env(self, run, environ):
        """The checkout bench found, for the launchers, when ``SGGB_ROOT`` does not name it already."""
        return {} if "SGGB_ROOT" in environ else {"SGGB_ROOT": str(self.host_root)}


LAUNCHES = {"sgb": SgbLaunch, "sgtr": SgtrLaunch, "sgg-benchmark": SggBenchmarkLaunch}
