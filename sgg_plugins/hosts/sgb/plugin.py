"""Hooking the regularizers into SGB through its registry and config, at import time.

``register()`` runs once the host is importable (the launchers and the one-line patch call it
through ``sgg_plugins.hosts.sgb.install``). It changes no host file:

- adds the objectives' nodes (``config.NODES``: ``MODEL.ALIGN``, ``RCL``, ``PROBE``, ``CLIPMATCH``,
  ``MRC``) to the host's global ``cfg``, so the keys merge from YAML and opts and are saved in
  ``OUTPUT_DIR/config.yml``;
- validates those keys when the model is built, before anything is trained, by wrapping
  ``build_detection_model`` (the name the host's tools import);
- replaces ``make_roi_relation_predictor`` (where the relation head calls it) with
  ``predictors.make_predictor``: the registered class itself when no objective is enabled, else its
  regularized subclass, for every class with a stock layout (a fork's, a user's subclass, or one
  declared with MODEL.SGG_PLUGINS.PREDICTOR_LAYOUT); ``Align<Name>`` switches MODEL.ALIGN on;
- wraps ``ROIRelationHead.forward`` so that, in training, a regularized predictor sees what the head
  holds and does not pass it (the targets' relation maps, the pooled RoI maps): nothing changes in
  eval or for a vanilla predictor;
- prints the host's training meters every ``MODEL.SGG_PLUGINS.LOG_PERIOD`` iterations as well
  (``training_log``);
- stops training at a non-finite loss, before that iteration's update and checkpoint
  (``nonfinite_loss``);
- saves beside each checkpoint what a resumed run needs to go on exactly (``resume_state``), and
  stops in one line when a checkpoint cannot be written (``checkpoint_writes``).
"""

import functools
import logging

from ...config import NODES, add_sgg_plugins_config, validate_config
from .checkpoint_writes import install_checkpoint_write_checks
from .nonfinite_loss import install_nonfinite_loss_stop
from .predictors import RegularizedPredictorMixin, make_predictor
from .resume_state import install_resume_state
from .training_log import install_training_log

logger = logging.getLogger("sgg_plugins")

_STATE = {"registered": False}


def _validating(build_detection_model):
    @functools.wraps(build_detection_model)
    def build(cfg):
        validate_config(cfg)
        return build_detection_model(cfg)

    build.sgg_plugins_validating = True
    return build


def _with_head_inputs(forward):
    """ROIRelationHead.forward that lends a regularized predictor, in training, what the head holds
    and does not pass it (``RegularizedPredictorMixin.relation_head_inputs``)."""
    @functools.wraps(forward)
    def head_forward(self, features, proposals, targets=None, logger=None):
        if not self.training or not isinstance(self.predictor, RegularizedPredictorMixin):
            return forward(self, features, proposals, targets, logger)
        with self.predictor.relation_head_inputs(self, targets):
            return forward(self, features, proposals, targets, logger)

    return head_forward


def register():
    """Install the plug-in into the imported host. Idempotent."""
    if _STATE["registered"]:
        return
    import maskrcnn_benchmark.modeling.detector as detector
    from maskrcnn_benchmark.config import cfg
    from maskrcnn_benchmark.modeling import registry
    # Importing the predictors module fills the registry with the host's classes (and a fork's).
    from maskrcnn_benchmark.modeling.roi_heads.relation_head import relation_head, roi_relation_predictors

    add_sgg_plugins_config(cfg)
    detector.build_detection_model = _validating(detector.build_detection_model)

    def make_roi_relation_predictor(config, in_channels):
        return make_predictor(registry.ROI_RELATION_PREDICTOR, config, in_channels)

    # The relation head calls the name it imported; the predictors module keeps its own binding.
    for module in (relation_head, roi_relation_predictors):
        module.make_roi_relation_predictor = make_roi_relation_predictor
    relation_head.ROIRelationHead.forward = _with_head_inputs(relation_head.ROIRelationHead.forward)
    install_training_log()
    install_nonfinite_loss_stop()
    install_resume_state()
    install_checkpoint_write_checks()  # after resume_state: its wrapper of Checkpointer.save goes outside
    _STATE["registered"] = True
    logger.info("sgg-plugins: registered %s for every relation predictor with a stock SGB layout",
                " / ".join(f"MODEL.{name}" for name in NODES))
