"""Hooking the objectives into Maelic/SGG-Benchmark through its config schema and its predictor
registry, at run time. ``register()`` changes no host file:

- the schema: the host's config is ``OmegaConf.merge(OmegaConf.structured(SGGBenchmarkConfig),
  <composed YAML and overrides>)`` (``config/hydra_config.py``, ``get_cfg``), which rejects any key
  its dataclasses lack (``Key 'align' not in 'ModelConfig'``). ``SGGBenchmarkConfig`` is replaced
  by a subclass whose ``model`` also holds one node per objective (``model.align``, ``model.rcl``,
  ``model.probe``, ``model.clipmatch``, ``model.mrc``) and ``model.sgg_plugins.gather_negatives``,
  lowercase, converted from ``sgg_plugins.config`` (``SCHEMA_NODES``, ``structured_config``): the keys merge from YAML and overrides with
  OmegaConf's type checks; the run's ``config.yml`` / ``hydra_config.yaml`` are written without
  them, so that the vanilla host reads them, and they go to ``sgg_plugins.yaml`` (``run_files``);
- validation: ``get_cfg`` also runs the objectives' validators on the merged config and checks that
  what is enabled is attached on this host (``SUPPORTED``), so a bad value stops the run with one
  line before any data is loaded;
- the predictor: ``make_roi_relation_predictor`` (where the relation head calls it) builds the
  registered class itself when no objective is enabled, else its subclass with the objectives
  attached: SGB's ``RegularizedPredictorMixin`` and objectives, read through SGB's table of the
  predictor's module layout (``sgb.specs``). SGG-Benchmark's ``MotifPredictor`` keeps SGB's module
  names and call signatures (``context_layer`` an ``LSTMContext`` with ``edge_ctx``, ``post_emb``,
  ``post_cat``, ``up_dim``, ``rel_compress``, ``freq_bias.obj_baseline``), and so do its
  ``VCTreePredictor`` and ``TransformerPredictor``; what differs is the
  proposals, dicts rather than BoxLists, which ``SGGBenchmarkStep`` reads and rebuilds (PROBE's
  augmented view, MRC's one-object images); the relation head lends each image's relation matrix
  (PROBE's supervising graph), and RCL's and CLIPMATCH's text banks read the COCO-JSON training
  split (``text_sources``). ``REACTPlusPlusPredictor`` has no SGB layout: MODEL.ALIGN attaches
  to it through its own objective, the adaptation of seed 002 in ``react_align``.
"""

import contextlib
import dataclasses
import functools
import logging

import torch

from ...config import NODES, ConfigError
from .schema import SCHEMA_NODES
from ..sgb.objectives.base import Step
from ..sgb.predictors import RegularizedPredictorMixin, stock_layout
from ..sgb.specs import SPECS
from ..structured_config import extended_dataclass, objective_dataclasses, validate_lowercase_nodes
from .react_align import LAYOUT as REACT_LAYOUT
from .react_align import ReactPlusPlusPredictorMixin
from .text_sources import training_text_sources

logger = logging.getLogger("sgg_plugins")

# What is attached on this host so far: objective -> predictors (by stock layout); another predictor
# is refused in one line when an objective is enabled on it.
SUPPORTED = {name: ("MotifPredictor", "VCTreePredictor", "TransformerPredictor") for name in NODES}
SUPPORTED["ALIGN"] += (REACT_LAYOUT,)
_STATE = {"registered": False}


class SGGBenchmarkStep(Step):
    """A training step of an SGG-Benchmark predictor: its proposals are dicts (``p["boxes"]``,
    ``p["labels"]``), not BoxLists."""

    @property
    def num_objs(self):
        return [p["boxes"].shape[0] for p in self.proposals]

    @property
    def obj_labels(self):
        return torch.cat([p["labels"] for p in self.proposals], 0).long()

    @staticmethod
    def boxes_of(proposal):
        return proposal["boxes"]

    @staticmethod
    def size_of(proposal):
        return proposal["image_size"]  # (width, height), PIL's image.size, as SGB's BoxList.size

    @staticmethod
    def with_boxes(proposal, boxes):
        return {**proposal, "boxes": boxes}

    @staticmethod
    def one_object_images(proposals):
        from sgg_benchmark.structures.box_ops import filter_instances

        # The host's own selection: per-object fields by row, the relation matrix by row and column.
        return [filter_instances(p, slice(i, i + 1)) for p in proposals for i in range(p["boxes"].shape[0])]


class SGGBenchmarkPredictorMixin(RegularizedPredictorMixin):
    step_class = SGGBenchmarkStep

    @staticmethod
    def training_text_sources(config, node):
        """RCL's and CLIPMATCH's text-bank sources: this host's COCO-JSON training split."""
        return training_text_sources(config, node)

    @contextlib.contextmanager
    def relation_head_inputs(self, head, targets):
        """For one training forward of the relation ``head``: each image's full annotated relation
        matrix (``t["relation"]``: PROBE supervises with the whole scene graph), with ground-truth
        boxes only, where the host's sampler keeps the targets' boxes in order. The pooled RoI maps
        SGB's box head lends are not taken: this host's YOLO feature extractor has no
        ``forward_without_pool``, so PROBE's augmented view flips and jitters the boxes only."""
        shared = {}
        if targets is not None and head.cfg.MODEL.ROI_RELATION_HEAD.USE_GT_BOX:
            shared["sgb_relation_maps"] = [t["relation"] for t in targets]
        self._relation_head_inputs = shared
        try:
            yield
        finally:
            self._relation_head_inputs = {}


def _lending_head_inputs(forward):
    """ROIRelationHead.forward that lends a regularized predictor, in training, what the head holds
    and does not pass it (``SGGBenchmarkPredictorMixin.relation_head_inputs``)."""
    @functools.wraps(forward)
    def head_forward(self, features, proposals, targets=None, *args, **kwargs):
        if not self.training or not isinstance(self.predictor, SGGBenchmarkPredictorMixin):
            return forward(self, features, proposals, targets, *args, **kwargs)
        with self.predictor.relation_head_inputs(self, targets):
            return forward(self, features, proposals, targets, *args, **kwargs)

    head_forward.sgg_plugins_original = forward
    return head_forward


_CLASSES = {}


def predictor_layout(cls):
    """The module layout the objectives read ``cls`` by: a stock SGB predictor's (SGG-Benchmark keeps
    their names), or REACT++'s, of the class or a base of it; None for any other."""
    layout = stock_layout(cls)
    if layout is None and any(c.__name__ == REACT_LAYOUT for c in cls.__mro__):
        layout = REACT_LAYOUT
    return layout


def regularized_predictor_class(base, layout):
    """The host predictor class ``base`` with the objectives attached (cached per class)."""
    if base not in _CLASSES:
        if layout == REACT_LAYOUT:  # no SGB spec: its own ALIGN objective reads it
            bases, spec = (ReactPlusPlusPredictorMixin, SGGBenchmarkPredictorMixin, base), None
        else:
            bases, spec = (SGGBenchmarkPredictorMixin, base), SPECS[layout]
        _CLASSES[base] = type(f"Regularized{base.__name__}", bases, {"spec": spec, "spec_name": layout})
    return _CLASSES[base]


def enabled_nodes(model):
    """The objectives' node names (``ALIGN``, ...) enabled under the host's ``model`` node."""
    return [name for name in NODES if name.lower() in model and model[name.lower()].enabled]


def check_supported(cfg, registry):
    """One line for an enabled objective that this host adapter does not attach (yet) where asked."""
    predictor = cfg.model.roi_relation_head.predictor
    for name in enabled_nodes(cfg.model):
        key = f"model.{name.lower()}.enabled"
        cls = registry.get(predictor)
        layout = predictor_layout(cls) if cls is not None else None
        if layout not in SUPPORTED[name]:
            raise ConfigError(f"{key}=true: model.roi_relation_head.predictor={predictor} is not supported by it on "
                              f"SGG-Benchmark yet; supported: {', '.join(SUPPORTED[name])}")
        # MotifPredictor builds LSTMContext only with a frozen detector; otherwise LSTMContext_RNN
        # (its own object decoder) or, with attributes, AttributeLSTMContext, whose edge context
        # the mirror has not been checked against.
        if layout == "MotifPredictor" and (not cfg.model.backbone.freeze or cfg.model.attribute_on):
            raise ConfigError(f"{key}=true on {predictor} needs model.backbone.freeze=true and "
                              "model.attribute_on=false (its LSTMContext); the other contexts are not supported yet")


def _omegaconf_value_error(error):
    """A one-line ConfigError for OmegaConf's refusal of a value under an objective's node, or None."""
    key = getattr(error, "full_key", "") or ""
    if not any(key.startswith(f"model.{name.lower()}.") for name in SCHEMA_NODES):
        return None
    return ConfigError(f"{key}: {str(error).splitlines()[0]}")


def _with_objectives(get_cfg, registry):
    def get_cfg_with_objectives(hydra_cfg=None):
        from omegaconf.errors import ValidationError

        try:
            cfg = get_cfg(hydra_cfg)
        except ValidationError as error:
            converted = _omegaconf_value_error(error)
            if converted is None:
                raise
            raise converted from None
        if hydra_cfg is not None:
            validate_lowercase_nodes(cfg.model)
            check_supported(cfg, registry)
        return cfg

    get_cfg_with_objectives.sgg_plugins_original = get_cfg
    return get_cfg_with_objectives


def add_objective_nodes(hydra_config):
    """Replace the host's root schema with one whose ``model`` holds the objectives' nodes."""
    from hydra.core.config_store import ConfigStore

    import sgg_benchmark.config as config_package

    root = hydra_config.SGGBenchmarkConfig
    model = extended_dataclass(hydra_config.ModelConfig, objective_dataclasses(SCHEMA_NODES))
    schema = dataclasses.make_dataclass(root.__name__, [("model", model, dataclasses.field(default_factory=model))],
                                        bases=(root,))
    hydra_config.SGGBenchmarkConfig = config_package.SGGBenchmarkConfig = schema
    ConfigStore.instance().store(name="sgg_benchmark_config", node=schema)


def register():
    """Install the plug-in into the imported host. Idempotent."""
    if _STATE["registered"]:
        return
    from sgg_benchmark.config import hydra_config
    from sgg_benchmark.modeling import registry
    # Importing the predictors module fills the registry with the host's classes.
    from sgg_benchmark.modeling.roi_heads.relation_head import relation_head, roi_relation_predictors

    import sgg_benchmark.config as config_package

    from .run_files import install_vanilla_config_files

    predictors = registry.ROI_RELATION_PREDICTOR
    add_objective_nodes(hydra_config)
    install_vanilla_config_files()
    hydra_config.get_cfg = config_package.get_cfg = _with_objectives(hydra_config.get_cfg, predictors)

    def make_roi_relation_predictor(cfg, in_channels):
        cls = predictors[cfg.model.roi_relation_head.predictor]
        enabled = enabled_nodes(cfg.model)
        if not enabled:
            return cls(cfg, in_channels)
        layout = predictor_layout(cls)
        logger.info("sgg-plugins: %s with %s", cls.__name__, ", ".join(f"model.{n.lower()}" for n in enabled))
        return regularized_predictor_class(cls, layout)(cfg, in_channels)

    # The relation head calls the name it imported; the predictors module keeps its own binding.
    for module in (relation_head, roi_relation_predictors):
        module.make_roi_relation_predictor = make_roi_relation_predictor
    if not hasattr(relation_head.ROIRelationHead.forward, "sgg_plugins_original"):
        relation_head.ROIRelationHead.forward = _lending_head_inputs(relation_head.ROIRelationHead.forward)
    _STATE["registered"] = True
    logger.info("sgg-plugins: registered %s in SGG-Benchmark's config schema; attached: %s",
                " / ".join(f"model.{name.lower()}" for name in NODES),
                "; ".join(f"model.{name.lower()} on {', '.join(p)}" for name, p in SUPPORTED.items()))
