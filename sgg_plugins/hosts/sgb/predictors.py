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

import difflib
import logging

import torch
from torch import nn

from ...config import ConfigError, any_enabled, check_predictor_support, validate_config
from ...regularizers.align import dropout_calls, dropout_disabled, dropout_sites, frozen_running_stats
from ..hooks import capture, patched_attribute
from .objectives import OBJECTIVES
from .objectives.base import Step
from .specs import SPECS


class RegularizedPredictorMixin:
    """Mixed in front of a host predictor class; see the module docstring."""

    spec = None  # set by regularized_predictor_class
    # What an objective reads a training step through; a host whose proposals are not BoxLists
    # (SGG-Benchmark's dicts) supplies a subclass.
    step_class = Step
    # Node -> objective class; a predictor of another layout (SGG-Benchmark's REACT++) supplies its own.
    objectives = OBJECTIVES
    # (config, node) -> the training split's classes and triplets for RCL's and CLIPMATCH's text
    # banks; None reads SGB's VG-SGG.h5 (objectives.base.training_split). SGG-Benchmark supplies one.
    training_text_sources = None

    def __init__(self, config, in_channels):
        super().__init__(config, in_channels)
        self.sgg_plugins = nn.ModuleDict()
        for node, objective in self.objectives.items():
            # getattr, not [node]: SGG-Benchmark's yacs-style config wrapper has attributes only.
            if getattr(config.MODEL, node).ENABLED:
                self.sgg_plugins[node.lower()] = objective(self, config)
        # Once the host's modules exist: where dropout may happen, so that an objective can ask
        # whether dropout ran in the part of the predictor it reruns.
        self._dropout_sites = [m for m in dropout_sites(self) if not _inside(self.sgg_plugins, m)]
        self._relation_head_inputs = {}  # lent by the relation head for one training forward

    @contextlib.contextmanager
    def relation_head_inputs(self, head, targets):
        """For one training forward of the relation ``head``: what it holds and does not pass to
        the predictor, for the objectives (``step.shared``).

        - ``sgb_relation_maps``: each image's full annotated relation matrix (PROBE supervises with
          the whole scene graph, not only the pairs the sampler kept). Only with ground-truth boxes
          (PredCls/SGCls), where the host's sampler asserts the proposals are the targets' boxes in
          order; SGDet's proposals are not.
        - ``sgb_pooled_rois`` and ``sgb_box_head``: the box feature extractor's pooled RoI maps and
          the layers that turn them into ``roi_features`` (PROBE's augmented view flips and rotates
          the maps). Only where the extractor has ``forward_without_pool`` and no attribute
          features are appended.
        """
        shared = {}
        handles = []
        if targets is not None and head.cfg.MODEL.ROI_RELATION_HEAD.USE_GT_BOX:
            shared["sgb_relation_maps"] = [t.get_field("relation") for t in targets]
        extractor = head.box_feature_extractor
        if not head.cfg.MODEL.ATTRIBUTE_ON and hasattr(extractor, "forward_without_pool"):
            handles.append(extractor.pooler.register_forward_hook(
                lambda module, args, output: shared.setdefault("sgb_pooled_rois", output)))
            shared["sgb_box_head"] = extractor.forward_without_pool
        self._relation_head_inputs = shared
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()
            self._relation_head_inputs = {}

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
        step = self.step_class(predictor=self, spec=self.spec, proposals=proposals, rel_pair_idxs=rel_pair_idxs,
                    rel_labels=rel_labels, rel_binarys=rel_binarys, roi_features=roi_features,
                    union_features=union_features, logger=logger, clean=clean,
                    rel_logits=torch.cat(rel_dists, 0),
                    dropout_ran=functools.partial(_any_called, dropped),
                    extra_pass=functools.partial(self._extra_pass, forests),
                    shared=dict(self._relation_head_inputs))
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


def stock_layout(cls):
    """The stock predictor ``cls`` is or derives from (a fork's or a user's subclass), or None."""
    return next((c.__name__ for c in cls.__mro__ if c.__name__ in SPECS), None)


def registered_predictor(registry, cfg, plugin=True):
    """The registered class MODEL.ROI_RELATION_HEAD.PREDICTOR names, and the config to build it with.

    With the plug-in, ``Align<Name>`` is ``<Name>`` with MODEL.ALIGN on (the config returned says
    so). An unknown name is one line with the closest registered name.
    """
    name = cfg.MODEL.ROI_RELATION_HEAD.PREDICTOR
    if name in registry:
        return registry[name], cfg
    base = name[len("Align"):]
    if plugin and name.startswith("Align") and base in registry:
        cfg = cfg.clone()
        cfg.defrost()
        cfg.MODEL.ALIGN.ENABLED = True
        cfg.freeze()
        return registry[base], cfg
    known = sorted(registry)
    close = difflib.get_close_matches(name, known + ([f"Align{k}" for k in known] if plugin else []), n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    align = " (Align<Name> switches MODEL.ALIGN on)" if plugin else ""
    raise ConfigError(f"MODEL.ROI_RELATION_HEAD.PREDICTOR = {name!r} is not a registered predictor; {hint}"
                      f"registered: {', '.join(known)}{align}")


def make_predictor(registry, cfg, in_channels):
    """What the host's ``make_roi_relation_predictor`` does, with the enabled objectives attached.

    Any registered predictor class takes the objectives when its module layout is a stock one's:
    found from its class (a stock predictor or a subclass), or declared with
    MODEL.SGG_PLUGINS.PREDICTOR_LAYOUT. ``Align<Name>`` builds ``<Name>`` with MODEL.ALIGN on.
    """
    validate_config(cfg)
    cls, cfg = registered_predictor(registry, cfg)
    name = cfg.MODEL.ROI_RELATION_HEAD.PREDICTOR
    if not any_enabled(cfg):
        return cls(cfg, in_channels)
    layout = cfg.MODEL.SGG_PLUGINS.PREDICTOR_LAYOUT or stock_layout(cls)
    if layout is None:
        raise ConfigError(
            f"MODEL.ROI_RELATION_HEAD.PREDICTOR = {name!r} ({cls.__module__}.{cls.__qualname__}) is neither a "
            f"stock SGB predictor nor a subclass of one: if it keeps a stock predictor's module layout, set "
            f"MODEL.SGG_PLUGINS.PREDICTOR_LAYOUT to it (one of {', '.join(SPECS)}).")
    check_predictor_support(cfg, layout)
    enabled = [f"MODEL.{node}" for node in OBJECTIVES if cfg.MODEL[node].ENABLED]
    follows = "" if layout == cls.__name__ else f" (layout {layout})"
    logging.getLogger("sgg_plugins").info("sgg-plugins: %s%s with %s", name, follows, ", ".join(enabled))
    return regularized_predictor_class(cls, layout)(cfg, in_channels)


def regularized_predictor_class(base, layout=None):
    """The host predictor class ``base`` with the objectives attached, read through the specs row
    of ``layout`` (default: the stock predictor ``base`` is or derives from); cached per pair."""
    layout = layout or stock_layout(base)
    cached = _CLASSES.get((base, layout))
    if cached is None:
        cached = type(f"Regularized{base.__name__}", (RegularizedPredictorMixin, base), {"spec": SPECS[layout], "spec_name": layout})
        _CLASSES[(base, layout)] = cached
    return cached


_CLASSES = {}
