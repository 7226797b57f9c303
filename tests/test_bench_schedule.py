"""The bench scheduler with fake runs, fake GPUs and fake memory readings: no host, no GPU, no nvidia-smi.

Each fake run holds a GPU for ``seconds``, takes its ``mib`` of the fake GPU's memory ``alloc_delay``
seconds after it starts (as a training allocates after it has built its model), and returns its
``status``. The fake GPUs count what their runs hold, which is what the scheduler reads back.
"""

import os
import stat
import threading
import time

import pytest

from sgg_plugins.bench.plan import BenchError
from sgg_plugins.bench.schedule import GpuMemory, GpuMemoryError, Scheduler, nvidia_smi_memory, usable_cores

GIB = 1024.0
POLL = 0.01


class FakeRun:
    def __init__(self, name, seconds=0.3, mib=3 * GIB, status="done", alloc_delay=0.0):
        self.name = name
        self.seconds = seconds
        self.mib = mib
        self.status = status
        self.alloc_delay = alloc_delay


class FakeGpus:
    """GPUs of ``total_mib`` each, ``others_mib`` of it used by processes outside the bench."""

    def __init__(self, gpus, total_mib=10 * GIB, others_mib=0.0):
        self.total = total_mib
        self.others = {gpu: others_mib for gpu in gpus}
        self.held = {gpu: {} for gpu in gpus}
        self.running = {gpu: set() for gpu in gpus}
        self.most_at_once = {gpu: 0 for gpu in gpus}
        self.started, self.ended = [], []
        self.events = []  # (what, run name, GPU, runs on it then), in order
        self.lock = threading.Lock()

    def read(self, gpu):
        with self.lock:
            used = self.others[gpu] + sum(self.held[gpu].values())
        return GpuMemory(used_mib=used, free_mib=self.total - used)

    def execute(self, run, gpu):
        with self.lock:
            self.running[gpu].add(run.name)
            self.most_at_once[gpu] = max(self.most_at_once[gpu], len(self.running[gpu]))
            self.started.append(run.name)
            self.events.append(("start", run.name, gpu, len(self.running[gpu])))
        time.sleep(run.alloc_delay)
        with self.lock:
            self.held[gpu][run.name] = run.mib
        time.sleep(max(0.0, run.seconds - run.alloc_delay))
        with self.lock:
            del self.held[gpu][run.name]
            self.running[gpu].discard(run.name)
            self.ended.append(run.name)
            self.events.append(("end", run.name, gpu, len(self.running[gpu])))
        return run.status


def scheduler(gpus, fake, log, **options):
    options.setdefault("runs_per_gpu", 3)
    return Scheduler(gpus, read_memory=fake.read, poll_seconds=POLL, say=log.append, environ={}, **options)


def test_each_gpu_takes_n_runs_at_once_never_more_and_runs_start_in_order():
    fake = FakeGpus(["0", "1"], total_mib=80 * GIB)
    runs = [FakeRun(f"v{i % 3}/seed{i // 3}", mib=1 * GIB) for i in range(12)]
    log = []
    statuses = scheduler(["0", "1"], fake, log).run_all(runs, fake.execute)
    assert list(statuses.values()) == ["done"] * 12 and list(statuses) == runs
    assert fake.most_at_once == {"0": 3, "1": 3}
    # A run never starts before an earlier one: seed by seed, as the bench lists them.
    assert fake.started == [run.name for run in runs]
    # The first run on each GPU ran alone until it ended.
    for gpu in ("0", "1"):
        first = next(e for e in fake.events if e[0] == "start" and e[2] == gpu)
        on_gpu = [e for e in fake.events if e[2] == gpu]
        assert first[3] == 1 and on_gpu[1] == ("end", first[1], gpu, 0)
    assert any("starts alone on GPU 0, which measures a run's peak memory" in line for line in log)
    assert any("GPU 0: a run takes at most 1.0 GiB (v0/seed0 ended)" in line for line in log)


def test_free_memory_short_of_the_budget_blocks_a_start():
    # 10 GiB GPU, 2 GiB of it used by another process; each run peaks at 3 GiB, 3.6 GiB with the
    # margin. After the first run, two fit (8 GiB free >= 2 x 3.6) but not a third, although
    # --runs-per-gpu allows 4. The runs allocate 0.1 s after they start: the scheduler must count a
    # run that has not allocated yet at its whole budget, or it would start the third at once.
    fake = FakeGpus(["0"], total_mib=10 * GIB, others_mib=2 * GIB)
    runs = [FakeRun(f"r{i}", seconds=0.4, alloc_delay=0.1) for i in range(6)]
    log = []
    statuses = scheduler(["0"], fake, log, runs_per_gpu=4, memory_margin=1.2).run_all(runs, fake.execute)
    assert list(statuses.values()) == ["done"] * 6
    assert fake.most_at_once["0"] == 2
    assert fake.started == [run.name for run in runs]
    waits = [line for line in log if line.startswith("[wait]") and "no memory for another run on GPU 0" in line]
    assert waits and "3.6 GiB a run (peak 3.0 x 1.2)" in waits[0]
    started_second = [line for line in log if "as its run 2 of at most 4" in line]
    assert started_second and "GiB free" in started_second[0]


def test_memory_taken_by_another_process_keeps_the_gpu_to_one_run():
    fake = FakeGpus(["0"], total_mib=10 * GIB)
    runs = [FakeRun(f"r{i}", seconds=0.15) for i in range(4)]

    def execute(run, gpu):
        if run.name == "r1":
            fake.others["0"] = 8 * GIB  # someone else's job takes most of the GPU
        return fake.execute(run, gpu)

    statuses = scheduler(["0"], fake, []).run_all(runs, execute)
    # A GPU with none of the bench's runs always takes one, so every run still ran, one at a time.
    assert list(statuses.values()) == ["done"] * 4 and fake.most_at_once["0"] == 1


def test_a_failed_run_does_not_stop_the_others_and_a_first_run_that_fails_is_measured_again():
    fake = FakeGpus(["0"], total_mib=80 * GIB)
    runs = [FakeRun("broken/seed0", seconds=0.05, status="failed")] + [FakeRun(f"ok/seed{i}") for i in range(5)]
    log = []
    statuses = scheduler(["0"], fake, log).run_all(runs, fake.execute)
    assert [statuses[run] for run in runs] == ["failed"] + ["done"] * 5
    # The failed first run measured nothing: the next run ran alone in its turn.
    starts = [e for e in fake.events if e[0] == "start"]
    assert starts[0][1:] == ("broken/seed0", "0", 1) and starts[1][1:] == ("ok/seed0", "0", 1)
    assert fake.events[fake.events.index(("start", "ok/seed0", "0", 1)) + 1][:2] == ("end", "ok/seed0")
    assert fake.most_at_once["0"] == 3
    assert any("broken/seed0 failed before its peak memory was known; the next run there starts alone" in line
               for line in log)


def test_a_peak_window_lets_the_next_runs_start_before_the_first_ends():
    fake = FakeGpus(["0"], total_mib=80 * GIB)
    runs = [FakeRun("r0", seconds=1.0)] + [FakeRun(f"r{i}", seconds=0.1) for i in range(1, 3)]
    log = []
    scheduler(["0"], fake, log, peak_window=0.2).run_all(runs, fake.execute)
    moments = [event[:2] for event in fake.events]
    assert moments.index(("start", "r1")) < moments.index(("end", "r0"))
    assert fake.ended[-1] == "r0"
    assert any("after 0.2 s of its first run alone" in line for line in log)


def test_unreadable_gpu_memory_fails_the_bench_before_any_run_and_later_keeps_a_gpu_to_one_run():
    fake = FakeGpus(["0"], total_mib=80 * GIB)

    def unreadable(gpu):
        raise GpuMemoryError("nvidia-smi: not found")

    with pytest.raises(BenchError, match="GPU 0's cannot be read: nvidia-smi: not found"):
        Scheduler(["0"], runs_per_gpu=2, read_memory=unreadable, say=print).check_memory()
    # Readable at first, then not: runs go on one at a time, and the log says why once.
    readings = {"count": 0}

    def flaky(gpu):
        readings["count"] += 1
        if readings["count"] > 2:
            raise GpuMemoryError("driver gone")
        return fake.read(gpu)

    log = []
    runs = [FakeRun(f"r{i}", seconds=0.1) for i in range(4)]
    statuses = Scheduler(["0"], runs_per_gpu=3, read_memory=flaky, poll_seconds=POLL, say=log.append,
                         environ={}).run_all(runs, fake.execute)
    assert list(statuses.values()) == ["done"] * 4 and fake.most_at_once["0"] == 1
    assert sum("its memory cannot be read (driver gone)" in line for line in log) == 1


def test_an_error_in_a_run_stops_new_starts_and_is_raised_after_the_running_runs_end():
    fake = FakeGpus(["0", "1"])
    runs = [FakeRun(f"r{i}", seconds=0.2) for i in range(4)]

    def execute(run, gpu):
        if run.name == "r1":
            raise OSError("disk full")
        return fake.execute(run, gpu)

    with pytest.raises(OSError, match="disk full"):
        Scheduler(["0", "1"], jobs=2, poll_seconds=POLL, say=print).run_all(runs, execute)
    assert fake.started == ["r0"] and fake.ended == ["r0"]


def test_cpu_runs_at_once_split_the_cores_unless_the_environment_sets_the_threads():
    log = []
    cpu = Scheduler([], jobs=2, say=log.append, environ={})
    assert cpu.threads_per_run == max(1, usable_cores() // 2)
    assert cpu.describe() == ["CPU runs, 2 at once (--jobs 2)",
                              f"OMP_NUM_THREADS={cpu.threads_per_run} for each run ({usable_cores()} cores / 2 runs "
                              f"at once)"]
    assert Scheduler([], jobs=2, environ={"OMP_NUM_THREADS": "1"}).threads_per_run is None
    assert Scheduler([], environ={}).threads_per_run is None  # one run alone keeps torch's default
    # N CPU runs at once, never more, in order.
    fake = FakeGpus([None])
    runs = [FakeRun(f"r{i}", seconds=0.15, mib=0) for i in range(5)]
    statuses = cpu.run_all(runs, fake.execute)
    assert list(statuses.values()) == ["done"] * 5 and fake.most_at_once[None] == 2 and fake.started == [
        run.name for run in runs]


def test_bad_settings_are_refused():
    with pytest.raises(BenchError, match="--runs-per-gpu is for GPU runs"):
        Scheduler([], runs_per_gpu=2)
    with pytest.raises(BenchError, match="GPU 0 is listed more than once in --gpus: put several runs on one GPU "
                                         "with --runs-per-gpu N"):
        Scheduler(["0", "0"])
    with pytest.raises(BenchError, match="--memory-margin 0.5"):
        Scheduler(["0"], runs_per_gpu=2, memory_margin=0.5)
    one_each = Scheduler(["3", "5"], jobs=4, environ={"OMP_NUM_THREADS": "2"})
    assert one_each.jobs == 2 and one_each.read_memory is None  # one run per GPU: no memory check
    assert one_each.describe()[0] == "--jobs 4 > 2 GPUs x 1 runs each: running at most 2 at once"
    assert Scheduler(["0", "1"], runs_per_gpu=4, environ={}).jobs == 8  # --runs-per-gpu fills every GPU


def test_nvidia_smi_is_asked_for_one_gpu_in_mib(tmp_path, monkeypatch):
    """A stand-in nvidia-smi on PATH prints what the real one prints for this query."""
    args_file = tmp_path / "args"
    fake = tmp_path / "bin" / "nvidia-smi"
    fake.parent.mkdir()
    fake.write_text(f"#!/bin/sh\necho \"$@\" > {args_file}\necho '1234, 140000'\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    assert nvidia_smi_memory("GPU-1a2b") == GpuMemory(used_mib=1234.0, free_mib=140000.0)
    assert args_file.read_text().split() == ["--id=GPU-1a2b", "--query-gpu=memory.used,memory.free",
                                             "--format=csv,noheader,nounits"]
    fake.write_text("#!/bin/sh\necho 'No devices were found'\nexit 6\n")
    with pytest.raises(GpuMemoryError, match="exited with 6: No devices were found"):
        nvidia_smi_memory("0")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(GpuMemoryError, match="No such file"):
        nvidia_smi_memory("0")
