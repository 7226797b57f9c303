"""``sgg-plugins bench``: train and test a baseline and regularized variants over several seeds.

One base host command (a config and opts) is run once per variant and seed through this repo's
launchers; every run gets its own host ``OUTPUT_DIR`` at ``<out>/<variant>/seed<k>/``::

    sgg-plugins bench --config-file configs/e2e_relation_X_101_32_8_FPN_1x.yaml --out bench/motifs \\
        --variants baseline align rcl probe all --variant "lr_low=SOLVER.BASE_LR 0.001" \\
        --seeds 0 1 2 --jobs 2 -- MODEL.ROI_RELATION_HEAD.USE_GT_BOX True ...

    sgg-plugins bench --host sgtr --vg-dir data/vg --out bench/sgtr --variants baseline align \\
        --seeds 0 1 2 -- MODEL.WEIGHTS /abs/path/vg_detr.pth ...

    sgg-plugins bench --host sgg-benchmark --config-file $SGGB_ROOT/configs/hydra/PSG/MotifPredictor.yaml \\
        --task predcls --out bench/sggb --seeds 0 1 2 -- ++datasets.data_dir /abs/data ...

``--host`` (default ``sgb``) picks the launchers, the seed mechanism and what keeps a test from
reporting an evaluation it did not compute (``host_commands.py``), and where the results are read
from (``outputs.host_outputs``). The variants and what makes two plans differ are in ``plan.py``;
where and when runs start (one or several runs per GPU, threads of CPU runs) in ``schedule.py``.

``run.json`` in each run folder records the exact commands, their environment, versions, status,
return codes, the tail of a failed stage's log and timings. A rerun skips every stage that
``run.json`` marks done and whose output exists, so an interrupted or partly failed bench is resumed
by running the same command again; a failed run is reported and the others go on.
"""

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import shlex
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from .host_commands import LAUNCHES
from .outputs import host_outputs
from .plan import (
    BUILTIN_VARIANTS,
    DEFAULT_VARIANTS,
    SGTR_VARIANTS,
    BenchError,
    bench_commands,
    plan_differences,
    plan_variants,
)
from .schedule import DEFAULT_MEMORY_MARGIN, Scheduler, visible_gpus

REPO_ROOT = Path(__file__).resolve().parents[2]
# Environment variables worth recording: they change what a run computes or where it runs.
RECORDED_ENV_PREFIXES = ("SGG_", "SGB_", "SGTR_", "CVPODS_", "CUDA", "CUBLAS", "NCCL_", "TORCH", "PYTHON", "OMP_",
                         "MKL_", "LD_LIBRARY_PATH", "PATH", "VIRTUAL_ENV", "CONDA_PREFIX", "WORLD_SIZE")
LOG_TAIL_LINES = 40


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
        if self.bench.scheduler.threads_per_run:
            env["OMP_NUM_THREADS"] = str(self.bench.scheduler.threads_per_run)
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

    def done_stages(self, record):
        """``{stage: done}``; a test counts only after a training that counts."""
        train = self.stage_done(record, "train")
        return {"train": train, "test": train and self.stage_done(record, "test")}

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
        self._print_lock = threading.Lock()
        self.scheduler = Scheduler(self.gpus, jobs=args.jobs, runs_per_gpu=args.runs_per_gpu,
                                   memory_margin=args.memory_margin, peak_window=args.peak_window, say=self.say)
        # Seed by seed, every variant of a seed before the next seed: a bench stopped half-way has
        # complete pairs to compare, not all of the baseline's seeds and none of a variant's. The
        # scheduler starts them in this order.
        self.runs = [Run(self, v, opts, s) for s in self.seeds for v, opts in self.variants.items()]

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
        """The command as one line to paste into a shell: folder, seed, host and GPU variables, the threads
        when bench split the cores, arguments."""
        keys = (*self.launch.shell_variables, "CUDA_VISIBLE_DEVICES") + (
            ("OMP_NUM_THREADS",) if self.scheduler.threads_per_run else ())
        variables = " ".join(f"{k}={shlex.quote(env[k])}" for k in keys if k in env)
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

    def execute(self, run, gpu):
        """Train then test one run on ``gpu`` (None: the CPU), skipping a training already done.
        Returns its final status."""
        record = run.read_record()
        done = run.done_stages(record)
        run.folder.mkdir(parents=True, exist_ok=True)
        if not done["train"] or record is None:
            record = {"variant": run.variant, "seed": run.seed, "plan": run.plan, "output_dir": str(run.folder),
                      "cwd": str(run.cwd), "stages": {}}
        record.update(status="running", machine=describe_machine(self.launch.host_root))
        for stage in ("train", "test"):
            if done[stage]:
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
        record["status"] = "done"
        _write_json(run.record_path, record)
        return "done"

    def dry_run(self):
        for run in self.runs:
            done = run.done_stages(run.read_record())
            for stage in ("train", "test"):
                if done[stage]:
                    print(f"# {run.name} {stage}: done, would be skipped")
                    continue
                gpu = f"<one of {','.join(self.gpus)}>" if self.gpus else None
                print(self.shell_line(run, run.command(stage), run.env(gpu)))

    def execute_all(self):
        """Every run not already done, as the scheduler places them; ``{run name: status}`` in plan order."""
        self.scheduler.check_memory()
        self.write_plan()
        for line in self.scheduler.describe():
            self.say(f"bench: {line}")
        statuses, pending = {}, []
        for run in self.runs:
            if run.done_stages(run.read_record())["test"]:
                self.say(f"[skip] {run.name}: already done")
                statuses[run.name] = "skipped"
            else:
                pending.append(run)
        for run, status in self.scheduler.run_all(pending, self.execute).items():
            statuses[run.name] = status
        return {run.name: statuses[run.name] for run in self.runs}


def add_arguments(parser):
    parser.add_argument("--host", choices=sorted(LAUNCHES), default="sgb",
                        help="the host the runs train and test: its launchers in tools/, its seed mechanism and its "
                             "result files (default: sgb)")
    parser.add_argument("--config-file", default=None,
                        help="SGB: the host config file, as given to the host scripts (required); SGTR: the "
                             "experiment's config module (the launcher's --config; default config_vg_sgtr.py); "
                             "SGG-Benchmark: one of its Hydra configs (required)")
    parser.add_argument("--task", choices=("predcls", "sgcls", "sgdet"), default=None,
                        help="SGG-Benchmark: its scripts' --task (required with --host sgg-benchmark)")
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
    parser.add_argument("--jobs", type=int, default=None,
                        help="runs at once in all (default: 1; with --runs-per-gpu N, N on each GPU); runs at once "
                             "share the cores: each gets OMP_NUM_THREADS = cores / runs unless it is set")
    parser.add_argument("--gpus", default=None,
                        help="comma-separated GPU ids for the runs, or 'none' for CPU runs (default: "
                             "CUDA_VISIBLE_DEVICES, else every GPU torch sees)")
    parser.add_argument("--runs-per-gpu", type=int, default=1, metavar="N",
                        help="runs one GPU takes at once (default: 1). Above 1, the first run on a GPU runs alone "
                             "while nvidia-smi measures its peak memory, and another starts there only while the "
                             "GPU's free memory covers that peak x --memory-margin")
    parser.add_argument("--memory-margin", type=float, default=DEFAULT_MEMORY_MARGIN, metavar="FACTOR",
                        help=f"with --runs-per-gpu: the GPU memory a new run needs free, as a multiple of the "
                             f"measured peak of one run (default: {DEFAULT_MEMORY_MARGIN:g})")
    parser.add_argument("--peak-window", type=float, default=None, metavar="SECONDS",
                        help="with --runs-per-gpu: how long the first run on a GPU runs alone to measure its peak "
                             "memory (default: until it ends; a shorter window misses a peak that comes later, "
                             "e.g. in the test)")
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
