"""The interface between one objective and an SGB predictor.

An objective reads a training step (:class:`Step`) and adds weighted entries to the host's loss
dict. It declares which clean-pass tensors it reads (``taps``); the adapter records them while the
host's own forward runs, then calls every enabled objective's ``losses(step)``. Objectives never
call each other; what two of them could share (an extra pass) goes through ``step.shared``.
"""

import copy
import itertools
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List

import torch
from torch import nn

from ....config import ConfigError
from ....regularizers.mrc import one_object_images
from ...hooks import has_path


@dataclass
class Step:
    """One training step of the predictor, as the objectives see it."""

    predictor: nn.Module  # the regularized predictor (host modules + ``sgg_plugins``)
    spec: Any  # its row of specs.SPECS
    # The predictor's own arguments.
    proposals: list
    rel_pair_idxs: list
    rel_labels: list
    rel_binarys: list
    roi_features: torch.Tensor
    union_features: Any
    logger: Any
    clean: Dict[str, Any]  # tensors recorded by the objectives' taps during the host's forward
    rel_logits: torch.Tensor  # the clean relation logits, (num_pairs, num_predicates)
    dropout_ran: Callable[[Any], bool]  # dropout_ran(modules): did dropout run inside them
    extra_pass: Callable  # context manager: frozen running stats, no dropout, clean forest
    shared: Dict[str, Any] = field(default_factory=dict)

    @property
    def host_args(self):
        return (self.proposals, self.rel_pair_idxs, self.rel_labels, self.rel_binarys)

    @property
    def num_objs(self) -> List[int]:
        return [len(p) for p in self.proposals]

    @property
    def obj_labels(self):
        return torch.cat([p.get_field("labels") for p in self.proposals], 0).long()

    # How an objective reads and rebuilds the host's proposals: SGB's BoxLists here; a host with
    # another proposal type (SGG-Benchmark's dicts) supplies a Step subclass.
    @staticmethod
    def boxes_of(proposal):
        return proposal.bbox

    @staticmethod
    def size_of(proposal):
        """(width, height) of the proposal's image."""
        return proposal.size

    @staticmethod
    def with_boxes(proposal, boxes):
        """A shallow copy of the proposal with other boxes: same image size, mode and fields (shared)."""
        moved = copy.copy(proposal)
        moved.bbox = boxes
        return moved

    @staticmethod
    def one_object_images(proposals):
        """Every object of every image as a proposal of its own, in the same order."""
        return one_object_images(proposals)

    @property
    def rel_labels_cat(self):
        return torch.cat(self.rel_labels, 0).long()

    @property
    def pair_rows(self):
        """Global rows of every sampled pair's subject and object in the concatenated objects."""
        if "pair_rows" not in self.shared:
            # Offsets as Python ints: a tensor of them would be copied to the device, a sync per step.
            offsets = itertools.accumulate([0] + self.num_objs[:-1])
            pairs = torch.cat([p.long() + off for p, off in zip(self.rel_pair_idxs, offsets)], 0)
            self.shared["pair_rows"] = (pairs[:, 0], pairs[:, 1])
        return self.shared["pair_rows"]


class SGBObjective(nn.Module):
    """One regularizer attached to an SGB predictor.

    Subclasses set ``node`` (their config node under ``MODEL``), build their trainable modules in
    ``__init__`` (registered as submodules of this object, which the adapter stores under the
    predictor's ``sgg_plugins``, so every parameter name starts with ``...predictor.sgg_plugins.``
    and checkpoints stay interchangeable with the vanilla host), and implement ``losses``.
    The predictor is passed to the methods that need it, never stored: storing it as an attribute
    would register the host's modules a second time under ``sgg_plugins``.
    """

    node = ""

    def taps(self, predictor) -> Dict[str, Any]:
        """The clean-pass tensors this objective reads: name -> hooks.Tap."""
        return {}

    def losses(self, step: Step) -> Dict[str, torch.Tensor]:
        """Weighted loss-dict entries; each is formed on every step, a graph-connected zero when
        the step offers nothing to the objective, so that every rank of a distributed run has the
        same keys and the same parameters in its graph."""
        raise NotImplementedError


def require(predictor, paths, node):
    """Raise one line naming the modules of the predictor's layout that ``node`` needs and that the
    built predictor lacks (a fork or a declared layout that does not match)."""
    missing = [p for p in paths if not has_path(predictor, p)]
    if missing:
        host = type(predictor).__mro__[2].__name__  # the registered class behind our subclass
        raise ConfigError(
            f"MODEL.{node}: {host} follows the {type(predictor).spec_name} layout but has no "
            f"{', '.join(missing)}; set MODEL.SGG_PLUGINS.PREDICTOR_LAYOUT to the stock predictor it does follow, "
            f"or disable MODEL.{node}.")


def text_encoder_device(config):
    """Where a text bank is embedded when no cached file holds it: the host's ``MODEL.DEVICE``.

    On a GPU machine the encoder runs on the GPU (CLIPMATCH's VG candidate bank is about 50,000
    texts: hours on the CPU); under torch.distributed "cuda" is each process's own device, which the
    host's launcher sets before the model is built.
    """
    return torch.device(getattr(getattr(config, "MODEL", None), "DEVICE", "cpu") or "cpu")


def training_split(predictor, config, node, vg_reader):
    """(obj_classes, pred_classes, [T, 3] triplets) of the training split, for RCL's and CLIPMATCH's
    text banks: the host's own reader where its predictor declares one (``training_text_sources``:
    SGG-Benchmark's COCO JSON), else ``vg_reader(config)``, SGB's VG-SGG.h5."""
    host_reader = predictor.training_text_sources
    return host_reader(config, node) if host_reader else vg_reader(config)
