"""The text banks of MODEL.RCL and MODEL.CLIPMATCH, checked before the host starts.

The objectives load (or compute) their banks when the host builds the model, after it has printed
its whole configuration, so a missing, unreadable, stale or foreign ``TEXT_EMBEDDINGS`` file, or CLIP
weights that cannot be had, stopped the run some 580 lines in. The preflight calls the loaders the
objectives call, ``load_or_compute_bank`` and ``load_or_compute_candidate_bank``, with ``dry_run``:
the same file checks and the same errors, a file that serves the run read once on the CPU, and where
a bank would be computed (no file yet, or a stale one the loader recomputes), only the text
encoder's weights resolved, no model built.
"""

from ...text.bank_builder import load_or_compute_bank
from ...text.candidates import load_or_compute_candidate_bank
from ...text.weights import CLIPUnavailableError
from .catalog import PreflightError, training_text_sources

# What the loaders raise for input a user can fix (PreflightError, from the catalog, is a ValueError).
TEXT_BANK_ERRORS = (ValueError, FileNotFoundError, ImportError, CLIPUnavailableError)


def text_bank_error_line(node, error):
    """One line naming the objective ``node`` ("RCL", "CLIPMATCH") once, whether or not ``error`` does."""
    message, name = str(error), f"MODEL.{node}"
    return message if message.startswith((f"{name} ", f"{name}:", f"{name}.")) else f"{name}: {message}"


def rcl_bank_arguments(rcl):
    """``load_or_compute_bank``'s keyword arguments for the MODEL.RCL node ``rcl``, as the objective passes them."""
    return dict(model=rcl.CLIP_MODEL, pretrained=rcl.CLIP_PRETRAINED, prompt=rcl.PROMPT,
                object_prompt=rcl.OBJECT_PROMPT, cache_path=rcl.TEXT_EMBEDDINGS or None,
                user_file=bool(rcl.TEXT_EMBEDDINGS))


def candidate_bank_arguments(clipmatch):
    """``load_or_compute_candidate_bank``'s keyword arguments for the MODEL.CLIPMATCH node ``clipmatch``."""
    return dict(model=clipmatch.CLIP_MODEL, pretrained=clipmatch.CLIP_PRETRAINED, prompt=clipmatch.PROMPT,
                null_prompt=clipmatch.NULL_PROMPT, cache_path=clipmatch.TEXT_EMBEDDINGS or None)


def check_text_banks(cfg):
    """Raise :class:`PreflightError` with the line for the first enabled objective whose bank would not load."""
    for node in ("RCL", "CLIPMATCH"):
        if not cfg.MODEL[node].ENABLED:
            continue
        try:
            obj_classes, pred_classes, triplets = training_text_sources(cfg, node=f"MODEL.{node}")
            if node == "RCL":
                load_or_compute_bank(obj_classes, pred_classes, triplets, dry_run=True,
                                     **rcl_bank_arguments(cfg.MODEL.RCL))
            else:
                load_or_compute_candidate_bank(obj_classes, pred_classes, triplets[:, [0, 2]], dry_run=True,
                                               **candidate_bank_arguments(cfg.MODEL.CLIPMATCH))
        except TEXT_BANK_ERRORS as error:
            raise PreflightError(text_bank_error_line(node, error)) from None
