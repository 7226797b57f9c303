"""Attach sgg-plugins to SGTR: ``MODEL.ALIGN`` on the host's config object, checked and attached
when the experiment's ``build_model`` runs.

SGTR has no yacs and no model registry: its config is a ``cvpods`` ``ConfigDict`` whose nodes are
``EasyDict``s, merged with ``KEY VALUE`` opts by ``merge_from_list`` (which rejects unknown keys),
and the model comes from the experiment's ``net.build_model(cfg)``. So the node is added to the
imported ``config`` object before the host merges its opts, and ``net.build_model`` is wrapped
(before the host script imports the name) to validate the merged keys with one clear line and to
attach the alignment objective to the built model.
"""

import functools
import sys

from easydict import EasyDict

from ...config import ConfigError, add_align_config, validate_align

# SGTR's own form of the objective (seed 002 §3.2): "we untie the last projection layer of the
# mirrored predicate decoder" -- an untied linear copy. §3.3's MLP ("we replace the last two linear
# layers of the mirrored relation predictor with a 3-layer MLP") is the Motifs form, fed Motifs'
# pairwise object features: it has no counterpart here, so HEAD untied_mlp is refused.
# MASKED_DECODERS: which cross-attention blocks get masks (see align.DECODER_STACKS for the reading
# of the paper). LOSS supervised: Table 3 "SA", the host's relation criterion on the mirror.
SGTR_ALIGN_DEFAULTS = dict(HEAD="untied_linear", MASKED_DECODERS="structural")
MASKED_DECODER_CHOICES = ("structural", "predicate", "entity")
SGTR_ALIGN_HEADS = ("untied_linear", "tied")


def align_node_view(config):
    """A yacs-like view whose ``MODEL`` is the host's own ``MODEL`` node (an EasyDict), so that
    ``add_align_config`` builds nodes of the host's class and writes them into the host's config."""
    return EasyDict(MODEL=config.MODEL)


def register_config(config):
    """Add ``MODEL.ALIGN`` (with SGTR's defaults) to the host's config object. Idempotent."""
    view = align_node_view(config)
    fresh = "ALIGN" not in config.MODEL
    add_align_config(view)
    for key, value in SGTR_ALIGN_DEFAULTS.items():
        if fresh or key not in config.MODEL.ALIGN:
            config.MODEL.ALIGN[key] = value
    return config


def validate(cfg):
    """Check ``MODEL.ALIGN`` as on SGB, then what SGTR's form supports. Raises ConfigError."""
    align = cfg.MODEL.ALIGN
    if align.MASKED_DECODERS not in MASKED_DECODER_CHOICES:
        raise ConfigError(f"MODEL.ALIGN.MASKED_DECODERS = {align.MASKED_DECODERS!r} is not allowed; expected one of "
                          f"{', '.join(map(repr, MASKED_DECODER_CHOICES))}.")
    validate_align(EasyDict({k: v for k, v in align.items() if k != "MASKED_DECODERS"}))
    if align.ENABLED:
        if align.HEAD not in SGTR_ALIGN_HEADS:
            raise ConfigError(f"MODEL.ALIGN.HEAD = {align.HEAD!r} is not available on SGTR; expected one of "
                              f"{', '.join(map(repr, SGTR_ALIGN_HEADS))} (SGTR's form unties the last linear layers).")


def wrap_build_model(net_module):
    """Make ``net.build_model`` validate the merged config and attach the objective. Idempotent."""
    original = net_module.build_model
    if hasattr(original, "sgg_plugins_original"):
        return

    @functools.wraps(original)
    def build_model(cfg):
        validate(cfg)
        model = original(cfg)
        if cfg.MODEL.ALIGN.ENABLED:
            from .align import attach_alignment

            attach_alignment(model, cfg.MODEL.ALIGN)
        return model

    build_model.sgg_plugins_original = original
    net_module.build_model = build_model


def register(config):
    """Register the plug-in on the host's ``config`` object and on the experiment's ``net``."""
    import importlib

    register_config(config)
    wrap_build_model(sys.modules.get("net") or importlib.import_module("net"))
