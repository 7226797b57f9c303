"""Hooking the objectives into Maelic/SGG-Benchmark through its config schema and its predictor
registry, at run time. ``register()`` changes no host file:

- the schema: the host's config is ``OmegaConf.merge(OmegaConf.structured(SGGBenchmarkConfig),
  <composed YAML and overrides>)`` (``config/hydra_config.py``, ``get_cfg``), which rejects any key
  its dataclasses lack (``Key 'align' not in 'ModelConfig'``). ``SGGBenchmarkConfig`` is replaced
  by a subclass whose ``model`` also holds one node per objective (``model.align``, ``model.rcl``,
  ``model.probe``, ``model.clipmatch``, ``model.mrc``), lowercase, converted from
  ``sgg_plugins.config.NODES`` (``structured_config``): the keys merge from YAML and overrides with
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
  ``post_cat``, ``up_dim``, ``rel_compress``, ``freq_bias.obj_baseline``); what differs is the
  proposals, dicts rather than BoxLists, which ``SGGBenchmarkStep`` reads.
"""

import dataclasses
import logging

import torch

from ...config import NODES, ConfigError
from ..sgb.objectives.base import Step
from ..sgb.predictors import RegularizedPredictorMixin, stock_layout
from ..sgb.specs import SPECS
from ..structured_config import extended_dataclass, objective_dataclasses, validate_lowercase_nodes

logger = logging.getLogger("sgg_plugins")

# What is attached on this host so far: objective -> predictors (by stock layout). The others are
# registered in the schema (so configs that set them load) but refused when enabled.
SUPPORTED = {"ALIGN": ("MotifPredictor",)}
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


class SGGBenchmarkPredictorMixin(RegularizedPredictorMixin):
    step_class = SGGBenchmarkStep


_CLASSES = {}


def regularized_predictor_class(base, layout):
    """The host predictor class ``base`` with the objectives attached (cached per class)."""
    if base not in _CLASSES:
        _CLASSES[base] = type(f"Regularized{base.__name__}", (SGGBenchmarkPredictorMixin, base),
                              {"spec": SPECS[layout], "spec_name": layout})
    return _CLASSES[base]


def enabled_nodes(model):
    """The objectives' node names (``ALIGN``, ...) enabled under the host's ``model`` node."""
    return [name for name in NODES if name.lower() in model and model[name.lower()].enabled]


def check_supported(cfg, registry):
    """One line for an enabled objective that this host adapter does not attach (yet) where asked."""
    predictor = cfg.model.roi_relation_head.predictor
    for name in enabled_nodes(cfg.model):
        key = f"model.{name.lower()}.enabled"
        if name not in SUPPORTED:
            raise ConfigError(f"{key}=true: {name} is not attached on SGG-Benchmark yet; on this host sgg-plugins "
                              f"attaches {', '.join(f'model.{n.lower()}' for n in SUPPORTED)} only "
                              "(docs/sgg_benchmark.md)")
        cls = registry.get(predictor)
        layout = stock_layout(cls) if cls is not None else None
        if layout not in SUPPORTED[name]:
            raise ConfigError(f"{key}=true: model.roi_relation_head.predictor={predictor} is not supported by it on "
                              f"SGG-Benchmark yet; supported: {', '.join(SUPPORTED[name])}")
        # MotifPredictor builds LSTMContext only with a frozen detector; otherwise LSTMContext_RNN
        # (its own object decoder) or, with attributes, AttributeLSTMContext, whose edge context
        # the mirror has not been checked against.
        if not cfg.model.backbone.freeze or cfg.model.attribute_on:
            raise ConfigError(f"{key}=true on {predictor} needs model.backbone.freeze=true and "
                              "model.attribute_on=false (its LSTMContext); the other contexts are not supported yet")


def _omegaconf_value_error(error):
    """A one-line ConfigError for OmegaConf's refusal of a value under an objective's node, or None."""
    key = getattr(error, "full_key", "") or ""
    if not any(key.startswith(f"model.{name.lower()}.") for name in NODES):
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
    model = extended_dataclass(hydra_config.ModelConfig, objective_dataclasses())
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
        layout = stock_layout(cls)
        logger.info("sgg-plugins: %s with %s", cls.__name__, ", ".join(f"model.{n.lower()}" for n in enabled))
        return regularized_predictor_class(cls, layout)(cfg, in_channels)

    # The relation head calls the name it imported; the predictors module keeps its own binding.
    for module in (relation_head, roi_relation_predictors):
        module.make_roi_relation_predictor = make_roi_relation_predictor
    _STATE["registered"] = True
    logger.info("sgg-plugins: registered %s in SGG-Benchmark's config schema; attached: %s",
                " / ".join(f"model.{name.lower()}" for name in NODES),
                "; ".join(f"model.{name.lower()} on {', '.join(p)}" for name, p in SUPPORTED.items()))
