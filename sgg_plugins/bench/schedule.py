"""Where and when bench starts its runs: one or several runs per GPU within its memory, or N CPU runs.

Runs start in the bench's order (seed by seed, every variant of a seed before the next seed): a run
starts only after every earlier run has started, so a bench stopped half-way leaves complete pairs.
A run keeps its place on its GPU from the start of its training to the end of its test, and a
failed run frees it for the next run like a finished one.

**One run per GPU** (the default): each GPU of ``--gpus`` takes one run at a time, ``--jobs`` runs
at once in all.

**Several runs per GPU** (``--runs-per-gpu N``): each GPU takes up to N runs at once, a new one
only while the GPU has memory for it. Memory is read from the driver (``nvidia-smi``), for the whole
GPU, and not from torch inside a run: the driver counts what a run really holds (its CUDA context,
the blocks torch's caching allocator keeps reserved after its peak, cuDNN workspaces), of which
``torch.cuda.max_memory_allocated`` sees none; it needs nothing from the host's scripts, SGB's
and SGTR's alike; and whole-GPU counters need no process ids, which do not match inside a container.

1. The first run on a GPU starts alone. While it runs, its peak is the most the GPU used above what
   it used just before that run started. The peak is known once that run has ended well, or has run
   ``--peak-window`` seconds alone; when it fails sooner, the next run on the GPU starts alone.
2. Every later reading while k of the bench's runs share the GPU can raise the peak: (used - used
   before the first of them) / k.
3. Another run starts while the GPU's free memory, less what its k runs have still to take of their
   budgets (k x budget - what they use now), is at least one budget, the peak x ``--memory-margin``.
   Runs that have just started and not yet allocated are counted at their whole budget.

A GPU with none of the bench's runs on it always takes the next run, as with one run per GPU.
Readings are taken every ``poll_seconds`` while a run waits to start. The log says at every start
how many runs the GPU then has and the numbers behind it, and once, while a run waits, why.

**Threads**: runs at once share the machine's cores. When more than one runs at once and the
environment does not set ``OMP_NUM_THREADS``, each run gets cores / runs at once, so that runs do
not each start one thread per core (torch's default).
"""

import os
import shlex
import subprocess
import threading
import time
from dataclasses import dataclass

from .plan import BenchError

DEFAULT_MEMORY_MARGIN = 1.2
DEFAULT_POLL_SECONDS = 5.0


class GpuMemoryError(RuntimeError):
    """A GPU's memory could not be read."""


@dataclass(frozen=True)
class GpuMemory:
    """One reading of a GPU's memory, in MiB, as the driver counts it (every process on the GPU)."""

    used_mib: float
    free_mib: float


def nvidia_smi_memory(gpu):
    """Read GPU ``gpu`` (an index or UUID, as ``CUDA_VISIBLE_DEVICES`` names it) with ``nvidia-smi``."""
    command = ["nvidia-smi", f"--id={gpu}", "--query-gpu=memory.used,memory.free", "--format=csv,noheader,nounits"]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise GpuMemoryError(f"{shlex.join(command)}: {error}") from None
    fields = result.stdout.strip().split(",")
    if result.returncode != 0 or len(fields) != 2:
        said = (result.stdout + result.stderr).strip()[:300]
        raise GpuMemoryError(f"{shlex.join(command)} exited with {result.returncode}: {said}")
    try:
        return GpuMemory(*(float(field) for field in fields))
    except ValueError:
        raise GpuMemoryError(f"{shlex.join(command)} printed {result.stdout.strip()!r}, not two numbers") from None


def visible_gpus(gpus_arg):
    """GPU ids to hand out; an empty list means CPU runs."""
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


def usable_cores():
    """Cores this process may run on (its affinity, which a container or ``taskset`` may narrow)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _gib(mib):
    return f"{mib / 1024:.1f}"


class _Device:
    """One GPU, or the CPU (``gpu`` None), and the bench's runs on it."""

    def __init__(self, gpu, capacity):
        self.gpu = gpu
        self.capacity = capacity
        self.running = 0
        self.used_before = None  # MiB the GPU used just before the first of its running runs started
        self.peak = None  # MiB one run takes at most, as read so far
        self.peak_known = False
        self.measuring = None  # the run measuring the peak alone
        self.measuring_since = None
        self.read_error = None  # what the last failed reading said, so that the log says it once

    @property
    def label(self):
        return "the CPU" if self.gpu is None else f"GPU {self.gpu}"


class Scheduler:
    """Starts runs in order, each on a GPU (or the CPU) with room for it; see the module docstring.

    ``read_memory(gpu) -> GpuMemory`` is :func:`nvidia_smi_memory` unless a test fakes it; it is
    only called with ``runs_per_gpu`` above 1.
    """

    def __init__(self, gpus, jobs=None, runs_per_gpu=1, memory_margin=DEFAULT_MEMORY_MARGIN, peak_window=None,
                 read_memory=nvidia_smi_memory, poll_seconds=DEFAULT_POLL_SECONDS, say=print, environ=None):
        if jobs is not None and jobs < 1:
            raise BenchError(f"--jobs {jobs}: give at least 1")
        if runs_per_gpu < 1:
            raise BenchError(f"--runs-per-gpu {runs_per_gpu}: give at least 1")
        if memory_margin < 1:
            raise BenchError(f"--memory-margin {memory_margin:g}: give at least 1 (the measured peak is a floor)")
        self.say = say
        self.runs_per_gpu = runs_per_gpu
        self.memory_margin = memory_margin
        self.peak_window = peak_window
        self.poll_seconds = poll_seconds
        self.notes = []
        if not gpus:
            if runs_per_gpu != 1:
                raise BenchError("--runs-per-gpu is for GPU runs; CPU runs (--gpus none) take --jobs N")
            self.jobs = jobs or 1
            self.devices = [_Device(None, self.jobs)]
            self.read_memory = None
        else:
            repeated = sorted({gpu for gpu in gpus if gpus.count(gpu) > 1})
            if repeated:
                raise BenchError(f"GPU {', '.join(repeated)} is listed more than once in --gpus: put several runs "
                                 f"on one GPU with --runs-per-gpu N, which checks its memory first")
            capacity = len(gpus) * runs_per_gpu
            self.jobs = min(jobs or (capacity if runs_per_gpu > 1 else 1), capacity)
            if jobs and jobs > capacity:
                self.notes.append(f"--jobs {jobs} > {len(gpus)} GPUs x {runs_per_gpu} runs each: running at most "
                                  f"{capacity} at once")
            self.devices = [_Device(gpu, runs_per_gpu) for gpu in gpus]
            self.read_memory = read_memory if runs_per_gpu > 1 else None
        environ = os.environ if environ is None else environ
        self.environ_threads = environ.get("OMP_NUM_THREADS")
        self.threads_per_run = None
        if self.jobs > 1 and self.environ_threads is None:
            self.threads_per_run = max(1, usable_cores() // self.jobs)
        self._changed = threading.Condition()
        self._statuses = {}
        self._errors = []

    def describe(self):
        """What the log says first: how many runs run at once, where, and why."""
        lines = list(self.notes)
        gpus = f"GPU{'s' if len(self.devices) > 1 else ''} {','.join(str(d.gpu) for d in self.devices)}"
        if self.devices[0].gpu is None:
            lines.append(f"CPU runs, {self.jobs} at once (--jobs {self.jobs})")
        elif self.read_memory is None:
            lines.append(f"{gpus}, one run on each at a time, {self.jobs} at once "
                         f"in all (--jobs)")
        else:
            until = "ends" if self.peak_window is None else f"ends or has run {self.peak_window:g} s"
            lines.append(f"{gpus}, up to {self.runs_per_gpu} runs on each "
                         f"(--runs-per-gpu), {self.jobs} at once in all: the first run on a GPU runs alone until it "
                         f"{until}, to measure its peak memory; another starts there while the GPU's free memory, "
                         f"less what its running runs still take, covers that peak x {self.memory_margin:g}")
        if self.threads_per_run:
            lines.append(f"OMP_NUM_THREADS={self.threads_per_run} for each run ({usable_cores()} cores / {self.jobs} "
                         f"runs at once)")
        elif self.jobs > 1:
            lines.append(f"OMP_NUM_THREADS={self.environ_threads} for each run, from the environment")
        return lines

    def check_memory(self):
        """Read every GPU once, so that a machine whose GPU memory cannot be read fails before any run."""
        if self.read_memory is None:
            return
        for device in self.devices:
            try:
                self.read_memory(device.gpu)
            except GpuMemoryError as error:
                raise BenchError(f"--runs-per-gpu {self.runs_per_gpu} checks each GPU's free memory before it "
                                 f"starts another run there, and {device.label}'s cannot be read: {error}") from None

    def run_all(self, runs, execute):
        """Call ``execute(run, gpu)`` for each run, in order, in a thread each, as room allows; wait for all.

        Returns ``{run: status}`` in the order of ``runs``: what ``execute`` returned. A run whose
        ``execute`` raised stops the starts; the others end, then the exception is raised again.
        """
        threads = []
        try:
            for run in runs:
                device = self._wait_for_room(run)
                if device is None:
                    break
                thread = threading.Thread(target=self._execute, args=(run, device, execute), name=f"bench {run.name}")
                thread.start()
                threads.append(thread)
        finally:
            # On Ctrl-C, start nothing new; the running host processes got the interrupt too.
            for thread in threads:
                thread.join()
        if self._errors:
            raise self._errors[0]
        return {run: self._statuses[run] for run in runs if run in self._statuses}

    def _execute(self, run, device, execute):
        status = "failed"
        try:
            status = execute(run, device.gpu)
        except BaseException as error:
            self._errors.append(error)
        finally:
            with self._changed:
                self._finish(device, run, status)
                self._statuses[run] = status
                self._changed.notify_all()

    def _wait_for_room(self, run):
        """Wait until a device can take ``run`` and count it there; None once a run raised."""
        said = None
        with self._changed:
            while not self._errors:
                device, why, reason = self._choose()
                if device is not None:
                    self._start(device, run, why)
                    return device
                if reason is not None and reason[0] != said:
                    self.say(f"[wait] {run.name}: {reason[1]}")
                said = reason and reason[0]
                self._changed.wait(self.poll_seconds)
        return None

    def _choose(self):
        """``(device, why, None)`` for the device to start the next run on, else ``(None, None, (key, why not))``,
        or ``(None, None, None)`` while --jobs runs run, the wait that describe() announced.

        Below --jobs some device has a free place, since --jobs is at most every device's places."""
        readings = {device.gpu: self._read(device) for device in self.devices if device.running and self.read_memory}
        busy = sum(device.running for device in self.devices)
        if busy >= self.jobs:
            return None, None, None
        refusal = None
        # The least busy device first; ties keep the order of --gpus.
        for device in sorted(self.devices, key=lambda d: d.running):
            if device.running >= device.capacity:
                continue
            if device.running == 0 or self.read_memory is None:
                return device, None, None
            why, refused = self._room(device, readings[device.gpu])
            if not refused:
                return device, why, None
            refusal = refusal or (refused, why)
        return None, None, refusal

    def _read(self, device):
        """A reading of ``device`` (None when it fails), which also updates its peak."""
        try:
            memory = self.read_memory(device.gpu)
        except GpuMemoryError as error:
            if str(error) != device.read_error:
                self.say(f"[gpu] {device.label}: its memory cannot be read ({error})")
            device.read_error = str(error)
            return None
        device.read_error = None
        if device.running and device.used_before is not None:
            per_run = max(0.0, memory.used_mib - device.used_before) / device.running
            device.peak = max(device.peak or 0.0, per_run)
            if (not device.peak_known and self.peak_window is not None
                    and time.monotonic() - device.measuring_since >= self.peak_window):
                self._know_peak(device, f"after {self.peak_window:g} s of its first run alone")
        return memory

    def _room(self, device, memory):
        """``(the numbers that decide, None)`` when ``device`` has memory for another run, else
        ``(why not, what keeps it)``; what keeps it names the wait, which the log says once."""
        if memory is None or device.used_before is None:
            return (f"{device.label}'s memory cannot be read, so no other run starts on it until it can",
                    ("unread", device.gpu))
        if not device.peak_known:
            until = "ends" if self.peak_window is None else f"ends or has run {self.peak_window:g} s"
            return (f"{device.label}'s first run runs alone until it {until}, to measure its peak memory",
                    ("measuring", device.gpu))
        budget = device.peak * self.memory_margin
        still_to_take = max(0.0, device.running * budget - max(0.0, memory.used_mib - device.used_before))
        numbers = (f"{_gib(memory.free_mib)} GiB free, {_gib(still_to_take)} GiB of it still to be taken by its "
                   f"{device.running} runs, {_gib(budget)} GiB a run (peak {_gib(device.peak)} x {self.memory_margin:g})")
        if memory.free_mib - still_to_take >= budget:
            return numbers, None
        return f"no memory for another run on {device.label}: {numbers}", ("memory", device.gpu)

    def _start(self, device, run, why):
        if self.read_memory is not None and device.running == 0:
            memory = self._read(device)
            device.used_before = memory.used_mib if memory is not None else None
            if not device.peak_known:
                device.measuring, device.measuring_since = run, time.monotonic()
                self.say(f"[gpu] {run.name} starts alone on {device.label}, which measures a run's peak memory "
                         f"(the GPU used {_gib(memory.used_mib) if memory else '?'} GiB before it)")
            else:
                self.say(f"[gpu] {run.name} starts on {device.label}, which has none of the bench's runs")
        elif why:
            self.say(f"[gpu] {run.name} starts on {device.label} as its run {device.running + 1} of at most "
                     f"{device.capacity}: {why}")
        device.running += 1

    def _finish(self, device, run, status):
        device.running -= 1
        if device.measuring is not run:
            return
        device.measuring = None
        if device.peak_known:
            return
        if status == "done" and device.peak is not None:
            self._know_peak(device, f"{run.name} ended")
        else:
            self.say(f"[gpu] {device.label}: {run.name} {status} before its peak memory was known; "
                     f"the next run there starts alone")

    def _know_peak(self, device, how):
        device.peak_known = True
        self.say(f"[gpu] {device.label}: a run takes at most {_gib(device.peak)} GiB ({how}); up to "
                 f"{device.capacity} runs at once there while each new one finds "
                 f"{_gib(device.peak * self.memory_margin)} GiB (x {self.memory_margin:g}) free beyond what the "
                 f"running runs still take")
