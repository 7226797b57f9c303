"""Resume loses nothing (``resume_state``), and a checkpoint that cannot be written stops in one line
(``checkpoint_writes``).

Host-free tests drive the pieces on stand-ins: ``HostCheckpointer`` follows the save and tag of
``maskrcnn_benchmark.utils.checkpoint.Checkpointer`` line for line. The host tests train through the
real launcher (``tests/sgb_resume_worker.py``, which records every optimizer step's LRs and can kill
the process with SIGKILL): an uninterrupted run of 20 iterations against one killed after its
iteration-10 checkpoint and resumed with the same command, each with SGG_PLUGINS_SEED 0.
"""

import errno
import json
import os
import random
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import REPO, host_command, needs_sgb
from sgg_plugins.hosts.sgb import checkpoint_writes, resume_state
from sgg_plugins.hosts.sgb.checkpoint_writes import CheckpointWriteError

DISK_FULL = ("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file data/0: "
             "file write failed")


class HostCheckpointer:
    """The host's Checkpointer.save and tag_last_checkpoint, as in maskrcnn_benchmark/utils/checkpoint.py."""

    def __init__(self, save_dir, model, optimizer=None, scheduler=None):
        self.save_dir, self.save_to_disk = str(save_dir), True
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler

    def save(self, name, **kwargs):
        data = {"model": self.model.state_dict()}
        data.update(kwargs)
        save_file = os.path.join(self.save_dir, "{}.pth".format(name))
        torch.save(data, save_file)
        self.tag_last_checkpoint(save_file)

    def tag_last_checkpoint(self, last_filename):
        save_file = os.path.join(self.save_dir, "last_checkpoint")
        with open(save_file, "w") as f:
            f.write(last_filename)


@pytest.fixture
def checkpointer(tmp_path, monkeypatch):
    """A stand-in checkpointer with the plug-in's hooks, in the order ``plugin.register`` installs them,
    and one good checkpoint, model_0000005.pth, already saved."""
    monkeypatch.setattr(HostCheckpointer, "save",
                        checkpoint_writes._stopping_on_write_failure(resume_state._saving_resume_state(
                            HostCheckpointer.save)))
    monkeypatch.setattr(HostCheckpointer, "tag_last_checkpoint", checkpoint_writes.tag_last_checkpoint_atomically)
    monkeypatch.setattr(resume_state, "_RUN", dict(resume_state._RUN, pending=[]))
    model = torch.nn.Linear(64, 64)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    saver = HostCheckpointer(tmp_path, model, optimizer, torch.optim.lr_scheduler.MultiStepLR(optimizer, [3]))
    saver.save("model_0000005", iteration=5)
    return saver


def failing_torch_save(error, when=lambda path: True):
    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        if when(str(f)):
            with open(f, "wb") as partial:
                partial.write(b"PK\x03\x04" + b"\0" * 100)
            raise error
        return real_save(obj, f, *args, **kwargs)

    return save


def measured_free_space_hidden(line):
    """``line`` with the free space it measured, which changes from run to run, as ``<free>``."""
    return re.sub(r"[\d.]+ (bytes|kB|MB|GB) free in ", "<free> free in ", line)


@pytest.mark.parametrize("error, cause", [
    (OSError(errno.ENOSPC, "No space left on device"), "the disk is full (<free> free in {dir})"),
    (RuntimeError(DISK_FULL), "writing failed with <free> free in {dir}"),
])
def test_a_failed_checkpoint_write_stops_in_one_line_and_leaves_the_last_checkpoint(checkpointer, tmp_path,
                                                                                      monkeypatch, error, cause):
    size = os.path.getsize(tmp_path / "model_0000005.pth")
    monkeypatch.setattr(torch, "save", failing_torch_save(error, lambda path: path.endswith("model_0000010.pth")))
    with pytest.raises(CheckpointWriteError) as caught:
        checkpointer.save("model_0000010", iteration=10)
    assert caught.value.code == f"error: {caught.value.line}"  # what the process prints; exit status 1
    line = measured_free_space_hidden(caught.value.line)
    assert line == (
        f"could not save the checkpoint {tmp_path}/model_0000010.pth: {cause.format(dir=tmp_path)}; the partial "
        f"file is removed, and last_checkpoint still names {tmp_path}/model_0000005.pth: make room (a checkpoint "
        f"of this run takes {checkpoint_writes.readable_size(size)}) and run the same command to resume from it")
    assert (tmp_path / "last_checkpoint").read_text() == f"{tmp_path}/model_0000005.pth"
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000005.pth", "model_0000005.pth.resume"]


def test_a_full_disk_when_tagging_keeps_last_checkpoint_whole(checkpointer, tmp_path, monkeypatch):
    """The host truncates last_checkpoint before writing it: on a full disk it would end up empty, and
    the next run would start from iteration 0."""
    def full_disk_write(text):
        def write(path):
            open(path, "w").close()
            raise OSError(errno.ENOSPC, "No space left on device")
        return write

    monkeypatch.setattr(checkpoint_writes, "_write_text", full_disk_write)
    with pytest.raises(CheckpointWriteError) as caught:
        checkpointer.save("model_0000010", iteration=10)
    assert caught.value.line.startswith(f"could not save the checkpoint {tmp_path}/model_0000010.pth: the disk is full")
    assert (tmp_path / "last_checkpoint").read_text() == f"{tmp_path}/model_0000005.pth"
    assert not [name for name in os.listdir(tmp_path) if "0000010" in name or name.startswith(".")]


def test_other_errors_of_a_save_pass_through(checkpointer, monkeypatch):
    monkeypatch.setattr(torch, "save", failing_torch_save(TypeError("cannot pickle 'generator' object")))
    with pytest.raises(TypeError):
        checkpointer.save("model_0000010", iteration=10)


def test_random_states_round_trip_through_the_file(tmp_path):
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    np.random.normal()  # a cached Gaussian in NumPy's state
    states = resume_state.random_states()
    expected = (random.random(), np.random.normal(), torch.rand(3))
    random.seed(2), np.random.seed(2), torch.manual_seed(2)
    resume_state.write_resume_state(tmp_path / "state", {"random": states})
    resume_state.set_random_states(resume_state.read_resume_state(tmp_path / "state")["random"])  # weights_only
    drawn = (random.random(), np.random.normal(), torch.rand(3))
    assert drawn[:2] == expected[:2] and torch.equal(drawn[2], expected[2])


def test_the_scheduler_progress_comes_from_the_file_and_its_settings_from_the_config():
    def scheduler(milestones):
        optimizer = torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=1.0)
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=0.5)

    stopped = scheduler([3, 6])
    for _ in range(4):
        stopped.optimizer.step(), stopped.step()
    resumed = scheduler([3, 8])  # the user moved a milestone before resuming
    resume_state.restore_scheduler_progress(resumed, resume_state.scheduler_state(stopped))
    assert resumed.last_epoch == 4 and resumed.get_last_lr() == [0.5] and list(resumed.milestones) == [3, 8]


@needs_sgb
@pytest.mark.parametrize("grouped", [False, True])
def test_the_training_batches_and_random_draws_are_the_hosts(grouped):
    """Listing each epoch as it starts (to record it) draws as the host's lazy loop does."""
    from sgg_plugins.hosts.sgb import install

    install()
    from maskrcnn_benchmark.data.samplers import GroupedBatchSampler, IterationBasedBatchSampler

    def batches(iterate):
        torch.manual_seed(0)
        sampler = torch.utils.data.RandomSampler(range(9))
        batch_sampler = GroupedBatchSampler(sampler, [i % 2 for i in range(9)], 2) if grouped else \
            torch.utils.data.BatchSampler(sampler, 2, drop_last=False)
        drawn = list(iterate(IterationBasedBatchSampler(batch_sampler, num_iterations=13, start_iter=1)))
        return drawn, torch.rand(1)  # the random stream after

    assert IterationBasedBatchSampler.__iter__ is resume_state.iterate_resumably
    host_batches, host_next = batches(resume_state._STATE["host_sampler_iter"])
    assert len(host_batches) == 12
    ours, our_next = batches(iter)
    assert ours == host_batches and torch.equal(our_next, host_next)


# ---------------------------------------------------------------------------------------------
# through the real launcher

SCHEDULES = {
    # The stock YAML's plateau settings (patience 1, no cooldown): with seed 0 the validation at 10
    # decays the LR, which a resume that forgets the best result misses.
    "plateau": ["SOLVER.SCHEDULE.TYPE", "WarmupReduceLROnPlateau", "SOLVER.VAL_PERIOD", "5"],
    "multistep": ["SOLVER.SCHEDULE.TYPE", "WarmupMultiStepLR", "SOLVER.STEPS", "(15,)", "SOLVER.VAL_PERIOD", "5"],
}


def worker_run(synthetic_vg, tmp_path, name, schedule, opts=(), **options):
    """A training run (20 iterations, checkpoints at 10 and 20 unless ``opts`` say otherwise) through the
    worker; (result, OUTPUT_DIR, LR log)."""
    out, lr_log = tmp_path / name, tmp_path / f"{name}_lr.jsonl"
    launcher = host_command(synthetic_vg, "relation_train_net", "MotifPredictor", "predcls",
                            [*SCHEDULES[schedule], *opts], out, ["--skip-test"])[2:]
    cmd = [sys.executable, os.path.join(REPO, "tests", "sgb_resume_worker.py"),
           json.dumps({"lr_log": str(lr_log), **options}), *launcher]
    result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "SGG_PLUGINS_SEED": "0"})
    return result, out, lr_log


def lr_history(lr_log):
    return [json.loads(line)["lrs"] for line in lr_log.read_text().splitlines()]


def validation_lines(log):
    return [line.split(" INFO: ")[1] for line in log.splitlines()
            if "Validation Result" in line or "Start validating" in line or "Trigger" in line]


@needs_sgb
@pytest.mark.parametrize("schedule, kill", [("plateau", {"kill": "validation", "at": 10}),
                                            ("multistep", {"kill": "iteration", "at": 12})])
def test_a_killed_and_resumed_run_ends_as_the_uninterrupted_one(synthetic_vg, tmp_path, schedule, kill):
    """plateau: killed in the validation that follows the iteration-10 checkpoint, which the resumed
    run repeats; multistep: killed in iteration 12, after that validation and step were done, so
    iterations 11 and 12 are trained again."""
    full, full_out, full_lrs = worker_run(synthetic_vg, tmp_path, "uninterrupted", schedule)
    assert full.returncode == 0, full.stderr[-3000:]
    killed, out, lrs = worker_run(synthetic_vg, tmp_path, "resumed", schedule, **kill)
    assert killed.returncode == -9 and "model_final.pth" not in os.listdir(out)
    if kill["kill"] == "iteration":  # the resumed run trains 11 and 12 again
        lrs.write_text("".join(lrs.read_text().splitlines(keepends=True)[:10]))
    resumed, out, lrs = worker_run(synthetic_vg, tmp_path, "resumed", schedule)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    assert lr_history(lrs) == lr_history(full_lrs)
    assert len(set(map(tuple, lr_history(full_lrs)[10:]))) > 1  # the LR changes after the resume point
    final = {path: resume_state.read_resume_state(path / "model_final.pth.resume") for path in (full_out, out)}
    assert final[out]["scheduler"] == final[full_out]["scheduler"]
    assert final[out]["lrs"] == final[full_out]["lrs"]
    stopped, resumed_lines = validation_lines(killed.stdout), validation_lines(resumed.stdout)
    repeated = "Start validating (again: the stopped run did not finish the validation of iteration 10)"
    if kill["kill"] == "validation":
        assert stopped[-1] == "Start validating" and resumed_lines[0] == repeated
        stopped, resumed_lines = stopped[:-1], ["Start validating", *resumed_lines[1:]]
    assert repeated not in resumed_lines
    assert stopped + resumed_lines == validation_lines(full.stdout)

    weights = {path: torch.load(path / "model_final.pth", map_location="cpu", weights_only=False)
               for path in (full_out, out)}
    model, momentum = weights[full_out]["model"], weights[full_out]["optimizer"]["state"]
    assert all(torch.equal(tensor, weights[out]["model"][name]) for name, tensor in model.items())
    assert all(torch.equal(state["momentum_buffer"], weights[out]["optimizer"]["state"][key]["momentum_buffer"])
               for key, state in momentum.items())


@needs_sgb
def test_a_full_disk_at_a_checkpoint_stops_the_launcher_in_one_line(synthetic_vg, tmp_path):
    result, out, _ = worker_run(synthetic_vg, tmp_path, "full_disk", "multistep",
                                ["SOLVER.CHECKPOINT_PERIOD", "5", "SOLVER.VAL_PERIOD", "1000"], disk_full_at=10)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: could not save the checkpoint {out}/model_0000010.pth: writing failed with ")
    assert last.endswith(f" free in {out}; the partial file is removed, and last_checkpoint still names "
                         f"{out}/model_0000005.pth: make room (a checkpoint of this run takes "
                         f"{checkpoint_writes.readable_size(os.path.getsize(out / 'model_0000005.pth'))}) and run "
                         "the same command to resume from it")
    assert (out / "last_checkpoint").read_text() == str(out / "model_0000005.pth")
    assert not [name for name in os.listdir(out) if "0000010" in name]
