"""Where each SGB predictor keeps what the regularizers need.

Two tables, read from the host's source (``roi_relation_predictors.py`` and the context modules);
module paths are relative to the predictor. They are the only place that knows the host's
internals: the objectives in ``objectives/`` are written against them.

- ``CONTEXTS``, keyed by the object-context class (``context_layer``): how ALIGN's mirror recomputes
  the edge context from a masked input while reusing the clean pass's object context, and which of
  the context's modules are "message passing and refinement" (seed 002 §3.1). Keyed by the context
  class rather than the predictor because Causal builds any of three contexts.
- ``SPECS``, keyed by the predictor class: its relation head (the layers ALIGN's untied head
  replaces), its prior, and the features RCL / PROBE / CLIPMATCH / MRC read.

Seed 002 §3.1: "we stop the gradient of the alignment loss at the input feature. This ensures that
the alignment loss only affects the message passing and feature refinement in the relation
predictor"; §3.3 for Motifs: "we duplicate the edge context LSTM and its subsequent prediction
layers. Random masks are applied on both input to the edge context LSTM and the relation feature."
"""

from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Tuple

import torch.nn.functional as F

from ..hooks import Tap

EDGE_CTX = Tap("context_layer", "output", index=2)  # (obj_dists, obj_preds, edge_ctx, ...)


@dataclass(frozen=True)
class ContextMirror:
    """How to rerun the edge part of an object context on a masked input.

    ``edge_call`` taps, in the clean pass, the call whose positional argument ``masked_arg`` is the
    edge input (everything before it is the object context, reused); ``rerun(context, args,
    kwargs, num_objs)`` recomputes the edge context from that call's arguments with the host's own modules;
    ``edge_index`` is where the edge context sits in ``context_layer``'s output tuple. ``modules``
    are the context's message-passing modules (under ``context_layer``): with the input detached,
    they are the only parts of the context that alignment trains.
    """

    edge_call: Tap
    masked_arg: int
    rerun: Callable
    edge_index: int
    modules: Tuple[str, ...]


def _call_method(name):
    def rerun(context, args, kwargs, num_objs):
        return getattr(context, name)(*args, **kwargs)

    return rerun


def _transformer_edge(context, args, kwargs, num_objs):
    # TransformerContext.forward: edge_ctx = context_edge(lin_edge(edge_pre_rep), num_objs).
    return context.context_edge(context.lin_edge(*args, **kwargs), num_objs)


def _vtranse_edge(context, args, kwargs, num_objs):
    # VTransEFeature.forward: edge_ctx = relu(fc_layer(cat(x, pos_embed, obj_embed2))).
    return F.relu(context.fc_layer(*args, **kwargs))


CONTEXTS = {
    # LSTMContext.forward: obj_ctx(...) -> obj_rel_rep = cat(obj_embed2(obj_preds), x, obj_ctx) ->
    # edge_ctx(obj_rel_rep, perm, inv_perm, ls_transposed) = lin_edge_h(edge_ctx_rnn(...)). The
    # edge LSTM and its output projection are "the edge context LSTM" of §3.3.
    "LSTMContext": ContextMirror(
        edge_call=Tap("context_layer", "call", method="edge_ctx"), masked_arg=0,
        rerun=_call_method("edge_ctx"), edge_index=2,
        modules=("edge_ctx_rnn", "lin_edge_h")),
    # VCTreeLSTMContext.forward: the forest and the object tree-LSTM decode first, then
    # edge_ctx(num_objs, obj_rel_rep, vc_forest) runs the edge tree-LSTM on the same forest, so
    # reusing the call's arguments reuses the clean forest and decoded labels.
    "VCTreeLSTMContext": ContextMirror(
        edge_call=Tap("context_layer", "call", method="edge_ctx"), masked_arg=1,
        rerun=_call_method("edge_ctx"), edge_index=2,
        modules=("edge_ctx_rnn",)),
    # TransformerContext.forward: the object encoder (context_obj) and object classification, then
    # lin_edge + context_edge, the relation-side encoder: the Transformer analogue of Motifs' edge
    # LSTM, masked at its input as §3.3 masks the edge LSTM's.
    "TransformerContext": ContextMirror(
        edge_call=Tap("context_layer.lin_edge", "call"), masked_arg=0,
        rerun=_transformer_edge, edge_index=2,
        modules=("lin_edge", "context_edge")),
    # VTransEFeature (Causal's "vtranse" context) has no message passing: its edge feature is one
    # layer over cat(x, pos_embed, obj_embed2), the refinement that alignment may train.
    "VTransEFeature": ContextMirror(
        edge_call=Tap("context_layer.fc_layer", "call"), masked_arg=0,
        rerun=_vtranse_edge, edge_index=2,
        modules=("fc_layer",)),
}


@dataclass(frozen=True)
class PredictorSpec:
    # ALIGN. "edge": the mirror reuses the clean object context and reruns the edge context
    # (CONTEXTS) and the predictor's layers after it; "inputs": the predictor has no separate
    # object context (IMP's nodes and edges pass messages jointly from the unary projections on),
    # so the whole predictor is rerun on its masked, detached inputs.
    align_mirror: str = "edge"
    # Predictor modules after the context that turn the edge context into pair features and that
    # the mirror shares ("its subsequent prediction layers", §3.3): they receive alignment gradient.
    refinement: Tuple[str, ...] = ("post_emb",)
    # The relation head: the "last two linear layers" (§3.3) and any parallel final layers whose
    # logits are summed with them. With HEAD untied_mlp all of them are replaced in the mirror by
    # one MLP fed the pairwise combined object features and the masked relation feature;
    # ``logit_layers`` are the layers whose outputs are relation logits (the MLP's output replaces
    # the first, the others give zero); ``pair_feature`` the first existing path whose input is
    # the pairwise combined object feature.
    head: Tuple[str, ...] = ("post_cat", "up_dim", "rel_compress")
    logit_layers: Tuple[str, ...] = ("rel_compress",)
    pair_feature: Tuple[str, ...] = ("post_cat",)
    # Modules that feed a pair_feature path's input besides the pair features themselves: the
    # mirror runs them, so alignment trains them (path -> modules).
    pair_feature_feeders: Dict[str, Tuple[str, ...]] = field(default_factory=dict)
    # Modules whose presence means the head's logits are not a sum of the logit layers (Causal's
    # FUSION_TYPE "gate" multiplies them by sigmoid(ctx_gate_fc(...))): the untied MLP cannot stand
    # in for such a head.
    gates: Tuple[str, ...] = ()
    # Output module of the frequency prior, zeroed in the mirror (no predicate prior, §3.3).
    freq_bias: Optional[str] = "freq_bias.obj_baseline"
    # RCL / CLIPMATCH: the classifier whose input is the relation representation. RCL: the
    # per-object representation and its layout ("halves": [n, 2h] = subject half | object half,
    # as post_emb; "same": one state per object used for both roles).
    relation_feature: str = ""
    object_feature: Optional[Tap] = None
    object_layout: str = "halves"
    # Width of the per-object features (RCL's object features, every PROBE feature), read from the
    # built predictor: post_emb consumes edge_ctx, whose width the object contexts share.
    object_dim: str = "post_emb.in_features"
    # PROBE: per-object context features by MODEL.PROBE.FEATURE name.
    probe_features: Dict[str, Tap] = field(default_factory=dict)
    # Module-level function that builds VCTree's forest; extra passes that rerun the whole context
    # (PROBE's second view) reuse the clean pass's.
    forest_builder: Optional[str] = None


MOTIFS = PredictorSpec(
    relation_feature="rel_compress",
    object_feature=Tap("post_emb"),
    probe_features={"edge_ctx": EDGE_CTX, "obj_ctx": Tap("context_layer", index=2, method="obj_ctx")},
)

VCTREE = PredictorSpec(
    head=("post_cat", "up_dim", "ctx_compress"),
    logit_layers=("ctx_compress",),
    relation_feature="ctx_compress",
    object_feature=Tap("post_emb"),
    probe_features={"edge_ctx": EDGE_CTX, "obj_ctx": Tap("context_layer", index=0, method="obj_ctx")},
    forest_builder="generate_forest",
)

# rel_dists = rel_compress(post_cat(prod) * up_dim(union)) + ctx_compress(prod) + prior: the
# parallel ctx_compress is a last layer too.
TRANSFORMER = PredictorSpec(
    head=("post_cat", "up_dim", "rel_compress", "ctx_compress"),
    logit_layers=("rel_compress", "ctx_compress"),
    relation_feature="rel_compress",
    object_feature=Tap("post_emb"),
    probe_features={"edge_ctx": EDGE_CTX, "obj_ctx": Tap("context_layer.context_obj")},
)

# IMP's context returns relation logits itself (rel_fc) and keeps one GRU state per object, updated
# once per message-passing iteration: the last call is the final state. Its node states also feed
# its object classifier (obj_fc): in SGCls/SGDet, alignment on IMP therefore also moves the object
# predictions, which §4.2's "only applied to relation prediction" cannot avoid for a predictor whose
# objects and relations pass messages jointly. Its only relation layer is
# rel_fc, fed the final edge state, which already combines the pair's node states with the
# (masked) relation feature through message passing: the untied MLP replaces rel_fc, fed its input.
_IMP_NODES = Tap("context_layer.node_gru", call="last")
IMP = PredictorSpec(
    align_mirror="inputs",
    # All of IMP's relation-side message passing, from the union projection (when its width
    # differs) and the unary projections to the GRUs and their gates; obj_fc only classifies
    # objects and is no part of relation prediction.
    refinement=("up_dim", "context_layer.obj_unary", "context_layer.edge_unary", "context_layer.edge_gru",
                "context_layer.node_gru", "context_layer.sub_vert_w_fc", "context_layer.obj_vert_w_fc",
                "context_layer.out_edge_w_fc", "context_layer.in_edge_w_fc"),
    head=("context_layer.rel_fc",),
    logit_layers=("context_layer.rel_fc",),
    pair_feature=("context_layer.rel_fc",),
    freq_bias=None,
    relation_feature="context_layer.rel_fc",
    object_feature=_IMP_NODES,
    object_layout="same",
    object_dim="context_layer.node_gru.hidden_size",
    probe_features={"edge_ctx": _IMP_NODES, "obj_ctx": _IMP_NODES},
)

# Causal: calculate_logits sums vis_compress(union), ctx_compress(post_ctx_rep) and the prior
# (FUSION_TYPE "sum", SGB's default; "gate" multiplies ctx_compress's logits by a sigmoid gate);
# post_cat is Sequential(Linear, ReLU) for the LSTM/tree contexts, absent for VTransE, whose pair
# feature is ctx_compress's input: head - tail, already scaled by spt_emb(box geometry) when
# SPATIAL_FOR_VISION (the stock config), so spt_emb is part of what feeds that pair feature. With
# the LSTM/tree contexts and the untied MLP, spt_emb is not used by the mirror.
CAUSAL = PredictorSpec(
    head=("post_cat", "ctx_compress", "vis_compress", "spt_emb", "ctx_gate_fc"),
    logit_layers=("ctx_compress", "vis_compress"),
    pair_feature=("post_cat", "ctx_compress"),
    pair_feature_feeders={"ctx_compress": ("spt_emb",)},
    gates=("ctx_gate_fc",),
    forest_builder="generate_forest",
)

SPECS = {
    "MotifPredictor": MOTIFS,
    "VCTreePredictor": VCTREE,
    "TransformerPredictor": TRANSFORMER,
    "IMPPredictor": IMP,
    "CausalAnalysisPredictor": CAUSAL,
}
