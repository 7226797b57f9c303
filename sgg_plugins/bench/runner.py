"""``sgg-plugins bench``: train and test a baseline and regularized variants over several seeds.

One base host command (a config and opts) is run once per variant and seed through this repo's
launchers; every run gets its own host ``OUTPUT_DIR`` at ``<out>/<variant>/seed<k>/``::

    sgg-plugins bench --config-file configs/e2e_relation_X_101_32_8_FPN_1x.yaml --out bench/motifs \\
        --variants baseline align rcl probe all --variant "lr_low=SOLVER.BASE_LR 0.001" \\
        --seeds 0 1 2 --jobs 2 -- MODEL.ROI_RELATION_HEAD.USE_GT_BOX True ...

    sgg-plugins bench --host sgtr --vg-dir data/vg --out bench/sgtr --variants baseline align \\
        --seeds 0 1 2 -- MODEL.WEIGHTS /abs/path/vg_detr.pth ...

``--host`` (default ``sgb``) picks the launchers, the seed mechanism, what keeps a test from
reporting an evaluation it did not compute, and where the results are read from
(``results.SgbOutputs`` / ``results_sgtr.SgtrOutputs``):

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

For both hosts the seed is also ``PYTHONHASHSEED``, and the test stage first deletes the evaluation
files a previous evaluation left, so a run only ever reports an evaluation its test computed.

``run.json`` in each run folder records the exact commands, their environment, versions, status,
return codes, the tail of a failed stage's log and timings. A rerun skips every stage that
``run.json`` marks done and whose output exists, so an interrupted or partly failed bench is resumed
by running the same command again; a failed run is reported and the others go on.
"""

import argparse
import concurrent.futures
import datetime
import importlib.metadata
import json
import os
import platform
import queue
import re
import shlex
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from .results import host_outputs

BUILTIN_VARIANTS = {
    "baseline": [],
    "align": ["MODEL.ALIGN.ENABLED", "True"],
    "rcl": ["MODEL.RCL.ENABLED", "True"],
    "probe": ["MODEL.PROBE.ENABLED", "True"],
    "clipmatch": ["MODEL.CLIPMATCH.ENABLED", "True"],
    "mrc": ["MODEL.MRC.ENABLED", "True"],
    "all": ["MODEL.ALIGN.ENABLED", "True", "MODEL.RCL.ENABLED", "True", "MODEL.PROBE.ENABLED", "True"],
}
DEFAULT_VARIANTS = ("baseline", "align", "rcl", "probe", "all")
# MODEL.ALIGN is the one objective with an SGTR adapter.
SGTR_VARIANTS = ("baseline", "align")
SEED_ENV = "SGG_PLUGINS_SEED"
REPO_ROOT = Path(__file__).resolve().parents[2]
# Environment variables worth recording: they change what a run computes or where it runs.
RECORDED_ENV_PREFIXES = ("SGG_", "SGB_", "SGTR_", "CVPODS_", "CUDA", "CUBLAS", "NCCL_", "TORCH", "PYTHON", "OMP_",
                         "MKL_", "LD_LIBRARY_PATH", "PATH", "VIRTUAL_ENV", "CONDA_PREFIX", "WORLD_SIZE")
LOG_TAIL_LINES = 40
# SGB's inference() re-evaluates a cached eval_results.pytorch when this is True (its default).
CACHE_KEY = "TEST.ALLOW_LOAD_FROM_CACHE"
NO_CACHE_OPTS = [CACHE_KEY, "False"]
_VARIANT_NAME = re.compile(r"^[A-Za-z0-9_.+-]+$")


class BenchError(ValueError):
    """The bench command line or an existing bench folder does not make a valid plan."""


def parse_variant(text, host="sgb"):
    """``"NAME=KEY VALUE [KEY VALUE ...]"`` -> ``(name, opts)``; a bare built-in name is accepted too."""
    name, _, opts_text = text.partition("=")
    name = name.strip()
    if not _VARIANT_NAME.match(name):
        raise BenchError(f"variant {text!r}: the name must be letters, digits or _.+- (it names a folder)")
    if not _:
        if name not in BUILTIN_VARIANTS:
            raise BenchError(
                f"unknown variant {name!r}: built-in variants are {', '.join(BUILTIN_VARIANTS)}; "
                f"define others as \"NAME=KEY VALUE ...\", e.g. \"lr_low=SOLVER.BASE_LR 0.001\""
            )
        if host == "sgtr" and name not in SGTR_VARIANTS:
            raise BenchError(f"variant {name!r} is not available on SGTR: only MODEL.ALIGN exists there "
                             f"(SGTR variants: {', '.join(SGTR_VARIANTS)}, or your own --variant NAME=KEY VALUE ...)")
        return name, list(BUILTIN_VARIANTS[name])
    opts = shlex.split(opts_text)
    if len(opts) % 2:
        raise BenchError(f"variant {name!r}: opts must be KEY VALUE pairs, got {opts}")
    return name, opts


def plan_variants(builtin_names, custom_specs, host="sgb"):
    variants = {}
    for text in list(builtin_names) + list(custom_specs):
        name, opts = parse_variant(text, host)
        if name in variants and variants[name] != opts:
            raise BenchError(f"variant {name!r} is defined twice with different opts")
        variants[name] = opts
    if not variants:
        raise BenchError("no variant to run: give --variants and/or --variant")
    return variants


def opts_to_dict(opts):
    """``[KEY, VALUE, ...]`` -> ``{KEY: VALUE}``; a repeated key keeps its last value, as yacs merges."""
    return dict(zip(opts[::2], opts[1::2]))


# Keys that change only what a run prints, not what it computes: runs that differ in them are the
# same experiment (a bench gains a variant after its log period was raised for the loss plot).
LOG_ONLY_KEYS = frozenset({"MODEL.SGG_PLUGINS.LOG_PERIOD"})


def bench_commands(plan):
    """The bench commands recorded in a ``bench.json``, in order (files before ``commands`` kept one ``command``)."""
    return list(plan.get("commands") or ([plan["command"]] if plan.get("command") else []))


def plan_differences(old, new):
    """What changed between two run plans (or two bench.json files), one short phrase per key.

    Opts are compared as settings (a later duplicate wins, order does not matter), so a refused
    rerun names the keys that differ instead of printing both plans. :data:`LOG_ONLY_KEYS` are not
    differences.
    """
    differences = []
    for field in sorted(set(old) | set(new)):
        before, after = old.get(field), new.get(field)
        if field.endswith("opts") and isinstance(before, list) and isinstance(after, list):
            before, after = opts_to_dict(before), opts_to_dict(after)
            for key in sorted((set(before) | set(after)) - LOG_ONLY_KEYS):
                if key not in before:
                    differences.append(f"{field}: added {key} {after[key]}")
                elif key not in after:
                    differences.append(f"{field}: removed {key} {before[key]}")
                elif before[key] != after[key]:
                    differences.append(f"{field}: {key} {before[key]} -> {after[key]}")
        elif before != after:
            differences.append(f"{field}: {before!r} -> {after!r}")
    return differences


def visible_gpus(gpus_arg):
    """GPU ids to hand out, one per concurrent run; an empty list means CPU runs."""
    if gpus_arg is not None:
        if gpus_arg.strip().lower() in ("", "none", "cpu"):
            return []
        return [g.strip() for g in gpus_arg.split(",") if g.strip()]
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        return [g.strip() for g in os.environ["CUDA_VISIBLE_DEVICES"].split(",") if g.strip()]
    try:
        import torch
    except ImportError:
        return []
    return [str(i) for i in range(torch.cuda.device_count())]


def _now():
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def _git_revision(folder):
    try:
        result = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def _package_versions():
    versions = {}
    for package in ("sgg-plugins", "torch", "torchvision", "numpy", "yacs"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def describe_machine(cwd):
    """What a run needs to be reproduced besides its command: interpreter, packages, code revisions."""
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "packages": _package_versions(),
        "git": {"host": _git_revision(cwd), "sgg_plugins": _git_revision(REPO_ROOT)},
    }


def recorded_env(env):
    return {key: value for key, value in sorted(env.items()) if key.startswith(RECORDED_ENV_PREFIXES)}


def _write_json(path, data):
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def _log_tail(log_path):
    lines = Path(log_path).read_text(errors="replace").splitlines() if Path(log_path).exists() else []
    return "\n".join(lines[-LOG_TAIL_LINES:])


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


class SgtrLaunch:
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
        self.host_root = None

    def base_plan(self, base_opts):
        return {"host": self.name, "launcher_args": self.launcher_args, "base_opts": base_opts}

    def bench_record(self):
        return {"launcher_args": self.launcher_args, "host_root": str(self.host_root)}

    def cwd(self, run):
        return run.folder

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


LAUNCHES = {"sgb": SgbLaunch, "sgtr": SgtrLaunch}


class Run:
    """One (variant, seed): its folder, its two host commands and its record ``run.json``."""

    def __init__(self, bench, variant, variant_opts, seed):
        self.bench = bench
        self.variant = variant
        self.seed = seed
        self.folder = bench.out / variant / f"seed{seed}"
        self.record_path = self.folder / "run.json"
        self.plan = {**bench.launch.base_plan(bench.base_opts), "variant_opts": variant_opts, "seed": seed}

    @property
    def name(self):
        return f"{self.variant}/seed{self.seed}"

    def command(self, stage):
        return self.bench.launch.command(self, stage)

    @property
    def cwd(self):
        return self.bench.launch.cwd(self)

    def env(self, gpu):
        env = dict(os.environ)
        env["PYTHONHASHSEED"] = str(self.seed)
        env.update(self.bench.launch.extra_env(self, env))
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpu
        elif self.bench.hide_gpus:
            env["CUDA_VISIBLE_DEVICES"] = ""
        return env

    def read_record(self):
        if not self.record_path.exists():
            return None
        try:
            return json.loads(self.record_path.read_text())
        except json.JSONDecodeError:
            return None

    def stage_done(self, record, stage):
        """A stage counts as done only when run.json says so and its output is on disk."""
        if not record or record.get("stages", {}).get(stage, {}).get("status") != "done":
            return False
        if stage == "train":
            return self.bench.outputs.has_trained_model(self.folder)
        return bool(self.bench.outputs.find_results(self.folder))

    def conflict(self, record):
        """Why an existing run folder cannot be resumed by this plan, or None."""
        if not record or "plan" not in record:
            return None
        differences = plan_differences(record["plan"], self.plan)
        if differences:
            return (f"{self.record_path} was made by another plan ({'; '.join(differences)}); "
                    f"give a new --out or delete {self.folder}")
        return None

    def clear_evaluation(self):
        """Delete evaluation files an earlier evaluation left; return their paths relative to the run folder."""
        cleared = []
        for path in self.bench.outputs.evaluation_files(self.folder):
            path.unlink()
            cleared.append(str(path.relative_to(self.folder)))
        return cleared


class Bench:
    def __init__(self, args):
        self.out = Path(args.out).resolve()
        self.launch = LAUNCHES[args.host](args)
        self.outputs = host_outputs(args.host)
        self.base_opts = list(args.opts[1:] if args.opts[:1] == ["--"] else args.opts)
        self.python = args.python
        train_script, test_script = (REPO_ROOT / "tools" / name for name in self.launch.scripts)
        self.train_script = Path(args.train_script or train_script).resolve()
        self.test_script = Path(args.test_script or test_script).resolve()
        names = self.launch.default_variants if args.variants is None else args.variants
        self.variants = plan_variants(names, args.variant, args.host)
        self.seeds = list(dict.fromkeys(args.seeds))
        self.gpus = visible_gpus(args.gpus)
        # "--gpus none" on a GPU machine must really keep the runs off the GPUs.
        self.hide_gpus = args.gpus is not None and not self.gpus
        self.jobs = max(1, args.jobs)
        if self.gpus and self.jobs > len(self.gpus):
            print(f"bench: --jobs {self.jobs} > {len(self.gpus)} GPUs; running {len(self.gpus)} at once, one GPU each")
            self.jobs = len(self.gpus)
        # Seed by seed, every variant of a seed before the next seed: a bench stopped half-way has
        # complete pairs to compare, not all of the baseline's seeds and none of a variant's.
        self.runs = [Run(self, v, opts, s) for s in self.seeds for v, opts in self.variants.items()]
        self._print_lock = threading.Lock()

    def script(self, stage):
        return self.train_script if stage == "train" else self.test_script

    def check(self):
        if len(self.base_opts) % 2:
            raise BenchError(f"base opts must be KEY VALUE pairs, got {self.base_opts}")
        if "OUTPUT_DIR" in self.base_opts[::2] or any("OUTPUT_DIR" in opts[::2] for opts in self.variants.values()):
            raise BenchError("do not pass OUTPUT_DIR: each run's OUTPUT_DIR is <out>/<variant>/seed<k>")
        self.launch.check(self.base_opts, self.variants)
        for what, script in (("--train-script", self.train_script), ("--test-script", self.test_script)):
            if not script.is_file():
                raise BenchError(f"launcher {script} not found; pass {what} (the launchers live in the "
                                 f"sgg-plugins checkout's tools/ folder)")
        for run in self.runs:
            problem = run.conflict(run.read_record())
            if problem:
                raise BenchError(problem)

    def say(self, text):
        with self._print_lock:
            print(text, flush=True)

    def write_plan(self):
        """``<out>/bench.json``: what ``sgg-plugins report`` needs to know (host, variants, seeds, baseline)."""
        path = self.out / "bench.json"
        previous = json.loads(path.read_text()) if path.exists() else {}
        base = {"host": self.launch.name, **self.launch.base_plan(self.base_opts)}
        if previous:
            # bench.json files from before SGTR support are SGB's.
            earlier = {key: previous.get(key, "sgb" if key == "host" else None) for key in base}
            differences = plan_differences(earlier, base)
            if differences:
                raise BenchError(f"{path} was made with another base command ({'; '.join(differences)}); "
                                 f"runs with another base command need a new --out")
        variants = dict(previous.get("variants", {}))
        for name, opts in self.variants.items():
            if name in variants:
                differences = plan_differences({"variant_opts": variants[name]}, {"variant_opts": opts})
                if differences:
                    raise BenchError(f"{path} defines variant {name!r} otherwise ({'; '.join(differences)}); "
                                     f"use a new --out")
            variants[name] = opts
        seeds = list(dict.fromkeys(previous.get("seeds", []) + self.seeds))
        # Every bench command that ran into this folder, in order: a folder filled by several (a
        # variant added later) is reported with all of them, not only the last.
        commands = bench_commands(previous)
        if sys.argv not in commands:
            commands.append(sys.argv)
        self.out.mkdir(parents=True, exist_ok=True)
        _write_json(path, {
            **base,
            **self.launch.bench_record(),
            "variants": variants,
            "seeds": seeds,
            "baseline": "baseline" if "baseline" in variants else None,
            "commands": commands,
            "updated": _now(),
        })

    def shell_line(self, run, command, env):
        """The command as one line to paste into a shell: folder, seed, host and GPU variables, arguments."""
        variables = " ".join(f"{k}={shlex.quote(env[k])}" for k in (*self.launch.shell_variables, "CUDA_VISIBLE_DEVICES")
                             if k in env)
        return f"cd {shlex.quote(str(run.cwd))} && {variables} {shlex.join(command)}"

    def run_stage(self, run, record, stage, gpu):
        command = run.command(stage)
        env = run.env(gpu)
        log_path = run.folder / f"{stage}.log"
        entry = {
            "command": command,
            "shell": self.shell_line(run, command, env),
            "env": recorded_env(env),
            "log": log_path.name,
            "status": "running",
            "started": _now(),
            # Seconds since the epoch: the report refuses a result file older than this.
            "started_unix": time.time(),
        }
        if stage == "test":
            entry["cleared"] = run.clear_evaluation()
        record["stages"][stage] = entry
        _write_json(run.record_path, record)
        start = time.monotonic()
        with open(log_path, "ab") as log:
            try:
                returncode = subprocess.run(command, cwd=run.cwd, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
            except OSError as error:
                # A launcher that cannot even start (bad --python) fails this run, not the bench.
                log.write(f"sgg-plugins bench: could not start {command[0]}: {error}\n".encode())
                returncode = None
        entry.update(returncode=returncode, finished=_now(), seconds=round(time.monotonic() - start, 1))
        entry["status"] = "done" if returncode == 0 else "failed"
        if returncode != 0:
            entry["log_tail"] = _log_tail(log_path)
        _write_json(run.record_path, record)
        return returncode == 0

    def execute(self, run, gpu_pool):
        """Train then test one run, skipping stages already done. Returns its final status."""
        record = run.read_record()
        train_done = run.stage_done(record, "train")
        test_done = train_done and run.stage_done(record, "test")
        if test_done:
            self.say(f"[skip] {run.name}: already done")
            return "skipped"
        run.folder.mkdir(parents=True, exist_ok=True)
        if not train_done or record is None:
            record = {"variant": run.variant, "seed": run.seed, "plan": run.plan, "output_dir": str(run.folder),
                      "cwd": str(run.cwd), "stages": {}}
        record.update(status="running", machine=describe_machine(self.launch.host_root))
        gpu = gpu_pool.get() if gpu_pool is not None else None
        try:
            for stage, done in (("train", train_done), ("test", False)):
                if done:
                    self.say(f"[skip] {run.name}: {stage} already done")
                    continue
                self.say(f"[start] {run.name}: {stage}" + (f" on GPU {gpu}" if gpu is not None else ""))
                if not self.run_stage(run, record, stage, gpu):
                    entry = record["stages"][stage]
                    record["status"] = "failed"
                    _write_json(run.record_path, record)
                    self.say(f"[FAILED] {run.name}: {stage} exited with {entry['returncode']}; "
                             f"see {run.folder / entry['log']}")
                    return "failed"
                self.say(f"[done] {run.name}: {stage} in {record['stages'][stage]['seconds']} s")
        finally:
            if gpu_pool is not None:
                gpu_pool.put(gpu)
        record["status"] = "done"
        _write_json(run.record_path, record)
        return "done"

    def dry_run(self):
        for run in self.runs:
            record = run.read_record()
            train_done = run.stage_done(record, "train")
            done = {"train": train_done, "test": train_done and run.stage_done(record, "test")}
            for stage in ("train", "test"):
                if done[stage]:
                    print(f"# {run.name} {stage}: done, would be skipped")
                    continue
                gpu = f"<one of {','.join(self.gpus)}>" if self.gpus else None
                print(self.shell_line(run, run.command(stage), run.env(gpu)))

    def execute_all(self):
        self.write_plan()
        gpu_pool = None
        if self.gpus:
            gpu_pool = queue.Queue()
            for gpu in self.gpus[: self.jobs]:
                gpu_pool.put(gpu)
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=self.jobs)
        futures = {pool.submit(self.execute, run, gpu_pool): run for run in self.runs}
        statuses = {}
        try:
            for future in concurrent.futures.as_completed(futures):
                statuses[futures[future].name] = future.result()
        finally:
            # On Ctrl-C, start nothing new; the running host processes got the interrupt too.
            pool.shutdown(wait=True, cancel_futures=True)
        return {run.name: statuses[run.name] for run in self.runs}


def add_arguments(parser):
    parser.add_argument("--host", choices=sorted(LAUNCHES), default="sgb",
                        help="the host the runs train and test: its launchers in tools/, its seed mechanism and its "
                             "result files (default: sgb)")
    parser.add_argument("--config-file", default=None,
                        help="SGB: the host config file, as given to the host scripts (required); SGTR: the "
                             "experiment's config module (the launcher's --config; default config_vg_sgtr.py)")
    parser.add_argument("--experiment", default=None,
                        help="SGTR: the experiment folder, absolute or relative to $SGTR_ROOT (default "
                             "playground/sgg/detr.res101.c5.one_stage_rel_tfmer)")
    parser.add_argument("--vg-dir", default=None,
                        help="SGTR: a dataset folder in SGB's VG format (the launchers' --vg-dir), else the "
                             "checkout's datasets/vg")
    parser.add_argument("--out", required=True, help="bench folder; each run's OUTPUT_DIR is OUT/<variant>/seed<k>")
    parser.add_argument("--variants", nargs="*", default=None, metavar="NAME",
                        help=f"built-in variants to run, of {', '.join(BUILTIN_VARIANTS)} (SGTR: "
                             f"{', '.join(SGTR_VARIANTS)}; default: {' '.join(DEFAULT_VARIANTS)}, SGTR: "
                             f"{' '.join(SGTR_VARIANTS)}; give none to run only --variant)")
    parser.add_argument("--variant", action="append", default=[], metavar='"NAME=KEY VALUE ..."',
                        help="a user-defined variant: its name and the opts added to the base command; repeatable")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="seeds, one run per variant and seed (default: 0)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once; with GPUs at most one run per GPU (default: 1)")
    parser.add_argument("--gpus", default=None,
                        help="comma-separated GPU ids handed out one per run, or 'none' for CPU runs "
                             "(default: CUDA_VISIBLE_DEVICES, else every GPU torch sees)")
    parser.add_argument("--cwd", default=None,
                        help="SGB: folder the host commands run in (default: $SGB_ROOT, else the current folder); "
                             "SGB reads its zero-shot triplets relative to it. SGTR runs run in their run folders")
    parser.add_argument("--python", default=sys.executable, help="interpreter for the launchers (default: this one)")
    parser.add_argument("--train-script", default=None,
                        help="training launcher (default: tools/relation_train_net.py of sgg-plugins, SGTR: "
                             "tools/sgtr_train_net.py)")
    parser.add_argument("--test-script", default=None,
                        help="test launcher (default: tools/relation_test_net.py of sgg-plugins, SGTR: "
                             "tools/sgtr_test_net.py)")
    parser.add_argument("--dry-run", action="store_true", help="print every command and what would be skipped, run nothing")
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=[],
                        help="base host opts (KEY VALUE ...), last and after '--', shared by every run")


def run(args):
    try:
        bench = Bench(args)
        bench.check()
    except BenchError as error:
        print(f"sgg-plugins bench: error: {error}", file=sys.stderr)
        return 2
    if args.dry_run:
        bench.dry_run()
        return 0
    try:
        statuses = bench.execute_all()
    except BenchError as error:
        print(f"sgg-plugins bench: error: {error}", file=sys.stderr)
        return 2
    failed = [name for name, status in statuses.items() if status == "failed"]
    counts = {s: sum(1 for v in statuses.values() if v == s) for s in ("done", "skipped", "failed")}
    print(f"bench: {counts['done']} done, {counts['skipped']} skipped (already done), {counts['failed']} failed"
          f" -> {bench.out}")
    if failed:
        print("failed runs (rerun the same command to retry them): " + ", ".join(failed), file=sys.stderr)
        return 1
    return 0
