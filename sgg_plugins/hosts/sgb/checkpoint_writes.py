"""A checkpoint that cannot be written stops training in one line, and ``last_checkpoint`` is never left half-written.

SGB's ``Checkpointer.save`` writes ``OUTPUT_DIR/<name>.pth`` with ``torch.save`` and then names it in
``OUTPUT_DIR/last_checkpoint``. On a full disk ``torch.save`` raises ``RuntimeError: [enforce fail at
inline_container.cc:...] PytorchStreamWriter failed writing file ...`` (or an ``OSError`` ENOSPC),
which the host lets through as a traceback; ``last_checkpoint`` then still names the previous
checkpoint, because the tag comes after the write. Two things here keep it that way and say so:

- a failed write of a checkpoint stops the run with one line naming the file, the cause and the free
  space, and removes the partial file (the space it holds is what the user needs back);
- ``tag_last_checkpoint`` writes a temporary file and renames it over ``last_checkpoint``: the host
  opens it with "w" (truncating it) before writing, so a full disk at that moment would leave it
  empty, and an empty ``last_checkpoint`` makes the next run start over from iteration 0 silently.

The stop is a ``SystemExit`` subclass, so it ends the process with exit status 1 and the line alone
whether the host script runs under our launcher or with the one-line patch. Only the process that
saves (rank 0) meets it; under torchrun the others stop when torchrun sees rank 0 exit.
"""

import errno
import functools
import os
import shutil

# What torch.save's zip writer says when a write fails (the file system's errno is not passed on).
STREAM_WRITER_MARKERS = ("PytorchStreamWriter", "inline_container")
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
LAST_CHECKPOINT = "last_checkpoint"

_STATE = {"installed": False}


class CheckpointWriteError(SystemExit):
    """A checkpoint could not be written; ``line`` says which, why, and what to do. Exits with status 1."""

    def __init__(self, line):
        super().__init__(f"error: {line}")
        self.line = line


def is_write_failure(error):
    """Whether ``error``, raised while saving a checkpoint, is the file system refusing the write."""
    if isinstance(error, OSError):
        return True
    return isinstance(error, RuntimeError) and any(marker in str(error) for marker in STREAM_WRITER_MARKERS)


def readable_size(num_bytes):
    for unit in ("bytes", "kB", "MB", "GB"):
        if num_bytes < 1000 or unit == "GB":
            return f"{num_bytes} {unit}" if unit == "bytes" else f"{num_bytes:.1f} {unit}"
        num_bytes /= 1000
    return None  # not reached


def write_atomically(path, write):
    """Call ``write(temporary_path)``, then rename the temporary file over ``path``: readers see the
    old file or the whole new one. The temporary file is removed if anything fails."""
    directory, name = os.path.split(path)
    temporary = os.path.join(directory, f".{name}.partial")
    try:
        write(temporary)
        os.replace(temporary, path)
    except BaseException:
        remove_quietly(temporary)
        raise


def remove_quietly(path):
    try:
        os.remove(path)
    except OSError:
        pass


def _write_text(text):
    def write(path):
        with open(path, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    return write


def last_checkpoint_named(save_dir):
    """The checkpoint ``save_dir/last_checkpoint`` names, or None."""
    try:
        with open(os.path.join(save_dir, LAST_CHECKPOINT)) as f:
            return f.read().strip() or None
    except OSError:
        return None


def write_failure_line(path, error, save_dir):
    """The one line for a checkpoint ``path`` that could not be written because of ``error``."""
    try:
        free = f"{readable_size(shutil.disk_usage(save_dir).free)} free in {save_dir}"
    except OSError:
        free = f"free space in {save_dir} unknown"
    if isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS:
        cause = f"the disk is full ({free})"
    elif isinstance(error, OSError):
        cause = f"{error.strerror or error} ({free})"
    else:
        cause = f"writing failed with {free}"
    previous = last_checkpoint_named(save_dir)
    if previous and os.path.isfile(previous):
        advice = (f"last_checkpoint still names {previous}: make room (a checkpoint of this run takes "
                  f"{readable_size(os.path.getsize(previous))}) and run the same command to resume from it")
    else:
        advice = "no checkpoint of this run was saved before: make room and run the same command again"
    return f"could not save the checkpoint {path}: {cause}; the partial file is removed, and {advice}"


def _stopping_on_write_failure(save):
    @functools.wraps(save)
    def checkpointer_save(self, name, **kwargs):
        try:
            return save(self, name, **kwargs)
        except (OSError, RuntimeError) as error:
            if not (self.save_dir and is_write_failure(error)):
                raise
            path = os.path.join(self.save_dir, f"{name}.pth")
            if os.path.abspath(path) != os.path.abspath(last_checkpoint_named(self.save_dir) or ""):
                remove_quietly(path)
            raise CheckpointWriteError(write_failure_line(path, error, self.save_dir)) from None

    return checkpointer_save


def tag_last_checkpoint_atomically(self, last_filename):
    """The host's ``Checkpointer.tag_last_checkpoint``, written through a temporary file and a rename."""
    write_atomically(os.path.join(self.save_dir, LAST_CHECKPOINT), _write_text(last_filename))


def install_checkpoint_write_checks():
    """Wrap the host's ``Checkpointer.save`` and make its ``tag_last_checkpoint`` atomic. Idempotent.

    Install after every other wrapper of ``save`` (``resume_state``), so that theirs fail the same way."""
    if _STATE["installed"]:
        return
    from maskrcnn_benchmark.utils import checkpoint

    checkpoint.Checkpointer.save = _stopping_on_write_failure(checkpoint.Checkpointer.save)
    checkpoint.Checkpointer.tag_last_checkpoint = tag_last_checkpoint_atomically
    _STATE["installed"] = True
