"""A resumed SGB training run goes on as if it had never stopped: scheduler, random streams, data order, validation.

What the host keeps and what it loses. ``relation_train_net.py`` checkpoints the model, the
optimizer and the iteration, but builds its checkpointer with ``custom_scheduler=True``, so the LR
scheduler's state is never saved: a resumed run starts WarmupMultiStepLR's count at 0 again (warmup
and milestones counted from the resume) and WarmupReduceLROnPlateau with fresh plateau counters
(best result, bad validations, cooldown, decays so far). It also draws new random streams and a new
data order, and in each iteration N it checkpoints *before* it validates and steps the scheduler
with the result, so a run killed in that validation never repeats it.

What the plug-in adds, beside each checkpoint ``X.pth``: ``X.pth.resume`` (``X.pth.resume.rank<R>``
from rank R > 0 under torchrun), a small ``torch.save`` file written atomically and loadable with
``weights_only=True``. It is written twice per checkpoint:

1. just before the host writes ``X.pth``: the scheduler's state and the optimizer's LRs as they are
   at the checkpoint, the random states (Python, NumPy, torch CPU and CUDA), and the training
   sampler's current epoch (its first iteration and its index batches, so that the data order goes
   on where it stopped);
2. right after the scheduler's step for N: the scheduler state and LRs after it, and the random
   states after the validation, marked as stepped.

On resume (``OUTPUT_DIR/last_checkpoint`` exists), after the host loads ``X.pth``, the scheduler's
progress is restored (its counters; its settings come from the config the run resumes with). When
the training loader yields its first batch, the rest of iteration N is finished as the stopped run
would have: if the file is not marked stepped, the random states at the checkpoint are restored, the
host's own ``run_val`` repeats the validation (when ``SOLVER.TO_VAL`` and N is a multiple of
``SOLVER.VAL_PERIOD``) and the scheduler steps as the host's loop does (stopping the run as the host
does once WarmupReduceLROnPlateau reaches ``MAX_DECAY_STEP``); then the random states after the step
are restored and the sampler's epoch is replayed from batch N + 1. With ``DATALOADER.NUM_WORKERS 0``
the resumed run then does exactly what the uninterrupted one does. What still differs: loader
workers (NUM_WORKERS > 0) start afresh with new seeds, so random transforms run in them (the train
transforms' flips and size choices) differ; the host's smoothed meters and ETA in the log start
over. Under torchrun every process restores its own random states and sampler epoch, and all take
the decisions (repeat the validation or not) from rank 0's file.

A checkpoint without the file (from a run without the plug-in) resumes as the host does, with one
warning that says what is lost.
"""

import collections
import functools
import inspect
import logging
import os
import random
import sys

import numpy as np
import torch

from .checkpoint_writes import remove_quietly, write_atomically

STATE_SUFFIX = ".resume"
STATE_FORMAT = 1
PLATEAU_SCHEDULE = "WarmupReduceLROnPlateau"
# The scheduler attributes that count its progress; everything else comes from the config.
SCHEDULER_PROGRESS = ("last_epoch", "_step_count", "_last_lr", "_is_initial", "_get_lr_called_within_step",
                      "stage_count", "best", "num_bad_epochs", "under_cooldown")
# Enough recorded epochs to hold the one the next iteration draws from, even when loader workers
# have prefetched into the next.
RECORDED_EPOCHS = 4

logger = logging.getLogger("sgg_plugins")
host_logger = logging.getLogger("maskrcnn_benchmark")

# "host_sampler_iter": the host's IterationBasedBatchSampler.__iter__, which iterate_resumably replaces.
_STATE = {"installed": False, "host_sampler_iter": None}
# This process's training: the training sampler's recent epochs as (iteration before their first
# batch, batches), the files awaiting the scheduler's step, the resume to finish when the training
# loader starts, and the host's validation loaders.
_RUN = {"epochs": collections.deque(maxlen=RECORDED_EPOCHS), "pending": [], "resume": None, "val_loaders": None}


def process_rank():
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    return 0


def resume_state_path(checkpoint_path, rank=0):
    """The file beside ``checkpoint_path`` that holds what its resume needs, for process ``rank``."""
    return f"{checkpoint_path}{STATE_SUFFIX}" + (f".rank{rank}" if rank else "")


# ---------------------------------------------------------------------------------------------
# the state itself


def random_states():
    """Python's, NumPy's and torch's (CPU, and each CUDA device once CUDA is in use) random states."""
    name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    states = {"python": random.getstate(),
              "numpy": (name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached_gaussian),
              "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_random_states(states):
    version, internal, gauss_next = states["python"]
    random.setstate((version, tuple(internal), gauss_next))
    name, keys, position, has_gauss, cached_gaussian = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached_gaussian))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        if len(states["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states["cuda"])
        else:
            logger.warning("sgg-plugins resume: the run was saved with %d CUDA devices and resumes with %d: "
                           "their random states are not restored", len(states["cuda"]), torch.cuda.device_count())


def _is_plain(value):
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    return isinstance(value, (list, tuple)) and all(map(_is_plain, value))


def scheduler_state(scheduler):
    """The scheduler's ``state_dict`` less what is no plain value (WarmupReduceLROnPlateau keeps its logger)."""
    return {key: value for key, value in scheduler.state_dict().items() if _is_plain(value)}


def restore_scheduler_progress(scheduler, state):
    """Set the scheduler's counters (``SCHEDULER_PROGRESS``) from ``state``; its settings stay the config's."""
    for key in SCHEDULER_PROGRESS:
        if key in state and hasattr(scheduler, key):
            setattr(scheduler, key, state[key])


def _flat_epoch(start_iteration, batches):
    return {"start_iteration": start_iteration,
            "indices": torch.tensor([int(i) for batch in batches for i in batch], dtype=torch.int64),
            "sizes": torch.tensor([len(batch) for batch in batches], dtype=torch.int64)}


def _epoch_batches(epoch):
    return [chunk.tolist() for chunk in torch.split(epoch["indices"], epoch["sizes"].tolist())]


def sampler_epoch_for(iteration):
    """The recorded epoch that batch ``iteration + 1`` comes from (None if not recorded), flattened."""
    for start_iteration, batches in reversed(_RUN["epochs"]):
        if start_iteration <= iteration:
            return _flat_epoch(start_iteration, batches)
    return None


def state_at_checkpoint(checkpointer, iteration):
    return {"format": STATE_FORMAT, "iteration": int(iteration), "scheduler_stepped": False,
            "scheduler_type": type(checkpointer.scheduler).__name__,
            "scheduler": scheduler_state(checkpointer.scheduler),
            "lrs": [group["lr"] for group in checkpointer.optimizer.param_groups],
            "random_at_checkpoint": random_states(), "random_after_step": None,
            "sampler_epoch": sampler_epoch_for(iteration)}


def write_resume_state(path, state):
    write_atomically(path, lambda temporary: torch.save(state, temporary))


def read_resume_state(path):
    return torch.load(path, map_location="cpu", weights_only=True)


# ---------------------------------------------------------------------------------------------
# hooks on the host


def _saving_resume_state(save):
    @functools.wraps(save)
    def checkpointer_save(self, name, **kwargs):
        if not (self.save_dir and self.scheduler is not None and self.optimizer is not None and "iteration" in kwargs):
            return save(self, name, **kwargs)
        # Written first: a checkpoint that last_checkpoint names always has its file.
        path = resume_state_path(os.path.join(self.save_dir, f"{name}.pth"), process_rank())
        state = state_at_checkpoint(self, kwargs["iteration"])
        try:
            write_resume_state(path, state)
            result = save(self, name, **kwargs)
        except BaseException:
            remove_quietly(path)
            raise
        _RUN["pending"].append((path, state, self.scheduler, self.optimizer))
        return result

    return checkpointer_save


def _completing_resume_state(step):
    """The scheduler's ``step``; the first one after a checkpoint marks its file stepped."""
    @functools.wraps(step)
    def scheduler_step(self, *args, **kwargs):
        result = step(self, *args, **kwargs)
        mine = [entry for entry in _RUN["pending"] if entry[2] is self]
        if mine:
            _RUN["pending"] = [entry for entry in _RUN["pending"] if entry[2] is not self]
            after = random_states()
            for path, state, _, optimizer in mine:
                write_resume_state(path, dict(state, scheduler_stepped=True, scheduler=scheduler_state(self),
                                              lrs=[group["lr"] for group in optimizer.param_groups],
                                              random_after_step=after))
        return result

    return scheduler_step


def _last_checkpoint_file(save_dir):
    try:
        with open(os.path.join(save_dir, "last_checkpoint")) as f:
            return f.read().strip()
    except OSError:
        return ""


def _restoring_resume_state(load):
    @functools.wraps(load)
    def checkpointer_load(self, *args, **kwargs):
        resuming = self.scheduler is not None and self.has_checkpoint()
        extra = load(self, *args, **kwargs)
        if resuming and extra:
            prepare_resume(self, _last_checkpoint_file(self.save_dir), int(extra.get("iteration", 0)))
        return extra

    return checkpointer_load


def prepare_resume(checkpointer, checkpoint_path, iteration):
    """Restore the scheduler's progress from ``checkpoint_path``'s file; the rest waits for the loader."""
    rank = process_rank()
    path = resume_state_path(checkpoint_path, rank)
    if not os.path.isfile(path):
        logger.warning(
            "sgg-plugins resume: %s has no %s beside it (saved without sgg-plugins?): resuming at iteration %d "
            "as the host does, without the LR scheduler's state (WarmupMultiStepLR counts its warmup and "
            "milestones from here again, WarmupReduceLROnPlateau forgets its best result and counters), the "
            "random streams, the data order or an interrupted validation", checkpoint_path,
            os.path.basename(path), iteration)
        return
    try:
        state = read_resume_state(path)
    except Exception as error:  # a truncated or foreign file: resume as the host would, and say so
        logger.warning("sgg-plugins resume: cannot read %s (%s): resuming as the host does, without it",
                       path, str(error).splitlines()[0] if str(error) else type(error).__name__)
        return
    scheduler_type = type(checkpointer.scheduler).__name__
    if state.get("iteration") != iteration or state.get("scheduler_type") != scheduler_type:
        logger.warning("sgg-plugins resume: %s is for iteration %s and %s, the run resumes at %d with %s: not used",
                       path, state.get("iteration"), state.get("scheduler_type"), iteration, scheduler_type)
        return
    # Every process takes the same decisions, rank 0's, as they validate together.
    shared_path = resume_state_path(checkpoint_path, 0)
    decisions = read_resume_state(shared_path) if rank and os.path.isfile(shared_path) else state
    restore_scheduler_progress(checkpointer.scheduler, decisions["scheduler"])
    if decisions["scheduler_stepped"]:
        for group, lr in zip(checkpointer.optimizer.param_groups, decisions["lrs"]):
            group["lr"] = lr
    _RUN["resume"] = {"iteration": iteration, "path": path, "state": state, "decisions": decisions,
                      "checkpointer": checkpointer}
    logger.info("sgg-plugins resume: the scheduler state, random streams and data order of iteration %d restored "
                "from %s%s", iteration, path, "" if decisions["scheduler_stepped"] else
                "; the validation and scheduler step of that iteration, which the stopped run did not finish, "
                "run first")


def _host_run_val():
    """The training script's own ``run_val`` (the script runs as ``__main__``), or None."""
    return getattr(sys.modules.get("__main__"), "run_val", None)


def repeat_validation(model, iteration):
    """The host's validation of ``iteration`` run again, its result; None where the host does not validate."""
    from maskrcnn_benchmark.config import cfg

    if not (cfg.SOLVER.TO_VAL and iteration % cfg.SOLVER.VAL_PERIOD == 0):
        return None
    run_val = _host_run_val()
    if run_val is None or _RUN["val_loaders"] is None:
        logger.warning("sgg-plugins resume: the validation of iteration %d cannot be repeated (no run_val in "
                       "the training script, or no validation loader seen); the scheduler steps without it",
                       iteration)
        return None
    host_logger.info("Start validating (again: the stopped run did not finish the validation of iteration %d)",
                     iteration)
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized() \
        and torch.distributed.get_world_size() > 1
    arguments = [cfg, model, _RUN["val_loaders"], distributed]
    if len(inspect.signature(run_val).parameters) > len(arguments):  # relation_train_net's takes the logger
        arguments.append(host_logger)
    val_result = run_val(*arguments)
    host_logger.info("Validation Result: %.4f" % val_result)
    return val_result


def finish_stopped_iteration(resume):
    """What the stopped run did after checkpoint N and before iteration N + 1, done or restored.

    Returns False where the host's loop would have stopped there (MAX_DECAY_STEP reached)."""
    from maskrcnn_benchmark.config import cfg

    iteration, state, checkpointer = resume["iteration"], resume["state"], resume["checkpointer"]
    scheduler = checkpointer.scheduler
    if resume["decisions"]["scheduler_stepped"]:
        set_random_states(state["random_after_step"] or state["random_at_checkpoint"])
    else:
        set_random_states(state["random_at_checkpoint"])
        val_result = repeat_validation(checkpointer.model, iteration)
        # The step below marks the file stepped, as the stopped run's would have.
        _RUN["pending"].append((resume["path"], state, scheduler, checkpointer.optimizer))
        if cfg.SOLVER.SCHEDULE.TYPE == PLATEAU_SCHEDULE:
            scheduler.step(val_result, epoch=iteration)
        else:
            scheduler.step()
    if cfg.SOLVER.SCHEDULE.TYPE == PLATEAU_SCHEDULE and scheduler.stage_count >= cfg.SOLVER.SCHEDULE.MAX_DECAY_STEP:
        host_logger.info("Trigger MAX_DECAY_STEP at iteration {}.".format(iteration))
        return False
    return True


def iterate_resumably(self):
    """``IterationBasedBatchSampler.__iter__``: the host's batches in the host's order, each epoch
    listed when it starts (the same random draw as the host's loop makes) and recorded for the
    checkpoints; a resumed run first finishes its stopped iteration and replays its epoch."""
    iteration = self.start_iter
    resume = _RUN["resume"]
    if resume is not None and resume["iteration"] == iteration:
        _RUN["resume"] = None
        if not finish_stopped_iteration(resume):
            return
        epoch = resume["state"]["sampler_epoch"]
        if epoch is not None:
            batches = _epoch_batches(epoch)
            _RUN["epochs"].append((epoch["start_iteration"], batches))
            for batch in batches[iteration - epoch["start_iteration"]:]:
                iteration += 1
                if iteration > self.num_iterations:
                    return
                yield batch
    while iteration <= self.num_iterations:
        if hasattr(self.batch_sampler.sampler, "set_epoch"):
            self.batch_sampler.sampler.set_epoch(iteration)
        batches = list(self.batch_sampler)
        _RUN["epochs"].append((iteration, batches))
        for batch in batches:
            iteration += 1
            if iteration > self.num_iterations:
                break
            yield batch


def _remembering_val_loaders(make_data_loader):
    @functools.wraps(make_data_loader)
    def make(cfg, mode="train", *args, **kwargs):
        loaders = make_data_loader(cfg, mode, *args, **kwargs)
        if mode == "val":
            _RUN["val_loaders"] = loaders
        return loaders

    return make


def install_resume_state():
    """Hook the host's checkpointer, LR schedulers, training sampler and loader factory. Idempotent.

    Must run before the host's training script imports ``make_data_loader`` by name."""
    if _STATE["installed"]:
        return
    import maskrcnn_benchmark.data as data
    from maskrcnn_benchmark.data.samplers import iteration_based_batch_sampler
    from maskrcnn_benchmark.solver import lr_scheduler
    from maskrcnn_benchmark.utils import checkpoint

    checkpoint.Checkpointer.save = _saving_resume_state(checkpoint.Checkpointer.save)
    checkpoint.Checkpointer.load = _restoring_resume_state(checkpoint.Checkpointer.load)
    for scheduler_class in (lr_scheduler.WarmupMultiStepLR, lr_scheduler.WarmupReduceLROnPlateau):
        scheduler_class.step = _completing_resume_state(scheduler_class.step)
    sampler_class = iteration_based_batch_sampler.IterationBasedBatchSampler
    _STATE["host_sampler_iter"] = sampler_class.__iter__
    sampler_class.__iter__ = iterate_resumably
    data.make_data_loader = _remembering_val_loaders(data.make_data_loader)
    _STATE["installed"] = True
