"""SGB relation predictors with the objectives attached.

``regularized_predictor_class(Base)`` returns a subclass of the host's own predictor class. Each
enabled objective (``objectives.OBJECTIVES``) is a module stored under ``sgg_plugins.<node>``, so
a checkpoint trained with a regularizer evaluates in the vanilla host (extra keys are ignored by
its loader) and a vanilla checkpoint fine-tunes here (the plug-in keys keep their initialisation).

In eval mode ``forward`` is the host's, untouched: no hook is registered, nothing extra runs.
In training one step is: the host's own forward, with the objectives' taps recording the tensors
they read; then each objective's ``losses(step)``, added to the host's loss dict.
"""

import contextlib
import functools
import sys

import torch
from torch import nn

from ...regularizers.align import dropout_calls, dropout_disabled, dropout_sites, frozen_running_stats
from ..hooks import capture, patched_attribute
from .objectives import OBJECTIVES
from .objectives.base import Step
from .specs import SPECS


class RegularizedPredictorMixin:
    """Mixed in front of a host predictor class; see the module docstring."""

    spec = None  # set by regularized_predictor_class

    def __init__(self, config, in_channels):
        super().__init__(config, in_channels)
        self.sgg_plugins = nn.ModuleDict()
        for node, objective in OBJECTIVES.items():
            if config.MODEL[node].ENABLED:
                self.sgg_plugins[node.lower()] = objective(self, config)
        # Once the host's modules exist: where dropout may happen, so that an objective can ask
        # whether dropout ran in the part of the predictor it reruns.
        self._dropout_sites = [m for m in dropout_sites(self) if not _inside(self.sgg_plugins, m)]

    def host_forward(self, *args):
        """The host class's own forward, for extra passes run by the objectives."""
        return super().forward(*args)

    def forward(self, proposals, rel_pair_idxs, rel_labels, rel_binarys, roi_features, union_features, logger=None):
        if not self.training or not len(self.sgg_plugins):
            return super().forward(proposals, rel_pair_idxs, rel_labels, rel_binarys, roi_features,
                                   union_features, logger)
        objectives = list(self.sgg_plugins.values())
        taps = {}
        for objective in objectives:
            taps.update(objective.taps(self))
        with self._forest_recorder() as forests, capture(self, taps) as clean, \
                dropout_calls(self._dropout_sites) as dropped:
            obj_dists, rel_dists, add_losses = super().forward(proposals, rel_pair_idxs, rel_labels, rel_binarys,
                                                               roi_features, union_features, logger)
        step = Step(predictor=self, spec=self.spec, proposals=proposals, rel_pair_idxs=rel_pair_idxs,
                    rel_labels=rel_labels, rel_binarys=rel_binarys, roi_features=roi_features,
                    union_features=union_features, logger=logger, clean=clean,
                    rel_logits=torch.cat(rel_dists, 0),
                    dropout_ran=functools.partial(_any_called, dropped),
                    extra_pass=functools.partial(self._extra_pass, forests))
        for objective in objectives:
            add_losses.update(objective.losses(step))
        return obj_dists, rel_dists, add_losses

    @contextlib.contextmanager
    def _forest_recorder(self, replay=None):
        """Record VCTree's forests in the clean pass, or replay them in an extra pass.

        The forest comes from a greedy Python loop over pair scores; rebuilding it in a pass that
        reruns the whole context would be slow and, were the scores different, would change the
        structure that pass is supposed to share with the original.
        """
        module = sys.modules[type(self.context_layer).__module__]
        name = self.spec.forest_builder
        if name is None or not hasattr(module, name):
            yield []
            return
        forests = [] if replay is None else list(replay)
        if replay is None:
            build = getattr(module, name)

            def builder(*args, **kwargs):
                forests.append(build(*args, **kwargs))
                return forests[-1]
        else:
            def builder(*args, **kwargs):
                return forests.pop(0)
        with patched_attribute(module, name, builder):
            yield forests

    @contextlib.contextmanager
    def _extra_pass(self, forests):
        """What every extra pass shares: frozen running statistics, no dropout, the clean forest."""
        with frozen_running_stats(self), dropout_disabled(self), self._forest_recorder(forests):
            yield


def _inside(root, module):
    return any(m is module for m in root.modules())


def _any_called(called, modules):
    """Did any dropout site inside ``modules`` run in the clean pass?"""
    return any(site in called for module in modules for site in module.modules())


def spec_for(base):
    """The specs row of a host predictor class: its own name's, else its nearest stock base's."""
    for cls in base.__mro__:
        if cls.__name__ in SPECS:
            return SPECS[cls.__name__]
    return None


def regularized_predictor_class(base):
    """The host predictor class ``base`` with the objectives attached (cached per class)."""
    cached = _CLASSES.get(base)
    if cached is None:
        cached = type(f"Regularized{base.__name__}", (RegularizedPredictorMixin, base), {"spec": spec_for(base)})
        _CLASSES[base] = cached
    return cached


_CLASSES = {}
