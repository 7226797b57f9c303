"""Where each SGB predictor keeps what the regularizers need.

One row per predictor of ``roi_relation_predictors.py``; module paths are relative to the predictor
and were read from the host's source. This table is the only place that knows the predictors'
internals: the adapter in ``predictors.py`` is written against it.
"""

from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

from ..hooks import Tap

EDGE_CTX = Tap("context_layer", "output", index=2)  # (obj_dists, obj_preds, edge_ctx, ...)


@dataclass(frozen=True)
class PredictorSpec:
    # Final linear layers whose outputs the predictor turns into relation logits: the "head" that
    # the alignment mirror unties (METHODS.md §1).
    classifiers: Tuple[str, ...]
    # The module whose floating inputs the alignment mirror masks (Eq. 1): the first of these paths
    # that exists in the built predictor. Motifs-style contexts: the edge-context LSTM's input; Transformer / IMP: the object
    # features entering the context (IMP's context also takes the union features).
    align_masked: Tuple[str, ...]
    # Whether the union features are masked as the predictor's argument (they are, unless the
    # masked context module already receives them, as IMP's does).
    mask_union_arg: bool = True
    # Output module of the frequency prior, zeroed in the mirror (no predicate prior, §3.3).
    freq_bias: Optional[str] = "freq_bias.obj_baseline"
    # RCL: the classifier whose input is the relation representation, and the per-object
    # representation with its layout ("halves": [n, 2h] = subject half | object half, as
    # post_emb; "same": one state per object used for both roles).
    relation_feature: str = ""
    object_feature: Optional[Tap] = None
    object_layout: str = "halves"
    # Width of the per-object features (RCL's object features, every PROBE feature), read from the
    # built predictor: post_emb consumes edge_ctx, whose width the object contexts share.
    object_dim: str = "post_emb.in_features"
    # PROBE: per-object context features by MODEL.PROBE.FEATURE name.
    probe_features: Dict[str, Tap] = field(default_factory=dict)
    # Features that the alignment mirror's masking reaches, so its pass can serve as the probe's
    # second view; for the others the probe runs its own masked pass of the context.
    align_view_features: Tuple[str, ...] = ("edge_ctx",)
    # Module-level function that builds VCTree's forest; the extra passes reuse the clean pass's.
    forest_builder: Optional[str] = None


MOTIFS = PredictorSpec(
    classifiers=("rel_compress",),
    align_masked=("context_layer.edge_ctx_rnn",),
    relation_feature="rel_compress",
    object_feature=Tap("post_emb"),
    probe_features={"edge_ctx": EDGE_CTX, "obj_ctx": Tap("context_layer", index=2, method="obj_ctx")},
)

VCTREE = PredictorSpec(
    classifiers=("ctx_compress",),
    align_masked=("context_layer.edge_ctx_rnn",),
    relation_feature="ctx_compress",
    object_feature=Tap("post_emb"),
    probe_features={"edge_ctx": EDGE_CTX, "obj_ctx": Tap("context_layer", index=0, method="obj_ctx")},
    forest_builder="generate_forest",
)

TRANSFORMER = PredictorSpec(
    classifiers=("rel_compress", "ctx_compress"),
    align_masked=("context_layer",),
    relation_feature="rel_compress",
    object_feature=Tap("post_emb"),
    probe_features={"edge_ctx": EDGE_CTX, "obj_ctx": Tap("context_layer.context_obj")},
    align_view_features=("edge_ctx", "obj_ctx"),
)

# IMP's context returns relation logits itself (rel_fc) and keeps one GRU state per object, updated
# once per message-passing iteration: the last call is the final state.
_IMP_NODES = Tap("context_layer.node_gru", call="last")
IMP = PredictorSpec(
    classifiers=("context_layer.rel_fc",),
    align_masked=("context_layer",),
    mask_union_arg=False,
    freq_bias=None,
    relation_feature="context_layer.rel_fc",
    object_feature=_IMP_NODES,
    object_layout="same",
    object_dim="context_layer.node_gru.hidden_size",
    probe_features={"edge_ctx": _IMP_NODES, "obj_ctx": _IMP_NODES},
    align_view_features=("edge_ctx", "obj_ctx"),
)

# Causal fuses ctx_compress and vis_compress (+ prior) in calculate_logits; both are its head. Its
# VTransE context has no edge LSTM, so its input is masked instead.
CAUSAL = PredictorSpec(
    classifiers=("ctx_compress", "vis_compress"),
    align_masked=("context_layer.edge_ctx_rnn", "context_layer"),
    forest_builder="generate_forest",
)

SPECS = {
    "MotifPredictor": MOTIFS,
    "VCTreePredictor": VCTREE,
    "TransformerPredictor": TRANSFORMER,
    "IMPPredictor": IMP,
    "CausalAnalysisPredictor": CAUSAL,
}
