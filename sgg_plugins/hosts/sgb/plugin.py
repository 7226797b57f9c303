"""Hooking the regularizers into SGB through its registry and config, at import time.

``register()`` runs once the host is importable (the launchers and the one-line patch call it
through ``sgg_plugins.hosts.sgb.install``). It changes no host file:

- adds ``MODEL.ALIGN``, ``MODEL.RCL`` and ``MODEL.PROBE`` to the host's global ``cfg``, so the keys
  merge from YAML and opts and are saved in ``OUTPUT_DIR/config.yml``;
- validates those keys when the model is built, before anything is trained, by wrapping
  ``build_detection_model`` (the name the host's tools import);
- points the stock predictor names of ``ROI_RELATION_PREDICTOR`` at a factory that builds the
  regularized subclass when a regularizer is enabled and the host's own class otherwise, and
  registers explicit names (``AlignMotifPredictor``, ...) that switch alignment on.
"""

import functools
import logging

from ...config import SUPPORTED_PREDICTORS, add_sgg_plugins_config, any_enabled, validate_config
from .predictors import regularized_predictor_class

logger = logging.getLogger("sgg_plugins")

_STATE = {"registered": False}


def _factory(base, force_align=False):
    def build(cfg, in_channels):
        if force_align:
            cfg = cfg.clone()
            cfg.defrost()
            cfg.MODEL.ALIGN.ENABLED = True
            cfg.freeze()
        validate_config(cfg)
        if not any_enabled(cfg):
            return base(cfg, in_channels)
        enabled = [n for n in ("ALIGN", "RCL", "PROBE") if cfg.MODEL[n].ENABLED]
        logger.info("sgg-plugins: %s with %s", base.__name__, ", ".join(f"MODEL.{n}" for n in enabled))
        return regularized_predictor_class(base)(cfg, in_channels)

    build.host_class = base
    return build


def _validating(build_detection_model):
    @functools.wraps(build_detection_model)
    def build(cfg):
        validate_config(cfg)
        return build_detection_model(cfg)

    build.sgg_plugins_validating = True
    return build


def register():
    """Install the plug-in into the imported host. Idempotent."""
    if _STATE["registered"]:
        return
    import maskrcnn_benchmark.modeling.detector as detector
    from maskrcnn_benchmark.config import cfg
    from maskrcnn_benchmark.modeling import registry
    # Importing the predictors module fills the registry with the host's classes.
    from maskrcnn_benchmark.modeling.roi_heads.relation_head import roi_relation_predictors  # noqa: F401

    add_sgg_plugins_config(cfg)
    detector.build_detection_model = _validating(detector.build_detection_model)

    predictors = registry.ROI_RELATION_PREDICTOR
    all_names = sorted(set().union(*SUPPORTED_PREDICTORS.values()))
    for name in all_names:
        base = getattr(predictors[name], "host_class", predictors[name])
        predictors[name] = _factory(base)
        align_name = "Align" + name
        if align_name not in predictors and name in SUPPORTED_PREDICTORS["align"]:
            predictors.register(align_name, _factory(base, force_align=True))
    _STATE["registered"] = True
    logger.info("sgg-plugins: registered MODEL.ALIGN / MODEL.RCL / MODEL.PROBE for %s", ", ".join(all_names))
