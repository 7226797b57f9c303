"""Relation alignment (seed 002) in its SGTR form (§3.2, §4.1), attached to SGTR's built model.

"We instantiate our self-supervised relation alignment mechanism on the structural predicate
decoder. Specifically, we first duplicate the structural predicate decoder and then apply our
proposed masking on the input (image/entity feature) to the mirrored branch." (§3.2)

On every training forward of SGTR's meta-architecture (``OneStageEncDecVRD``):

1. the host's own forward runs unchanged; the call of its ``relation_decoder``
   (``PredicateNodeGenerator``) is recorded, with the structural decoder's inputs: the relation
   image memory from its encoder and the initial queries from its query generator;
2. *target*: the structural decoder runs again on those inputs, detached, without gradient and
   with all dropout off — "we conduct another forward pass of the original decoder without the
   dropout operations to form the target of the alignment loss" (§4.1) — through the original heads;
3. *mirror*: the structural decoder runs once more on the same detached inputs — "we stop the
   gradient of the alignment loss at the input feature" (§3.1) — with dropout off ("we turn off all
   the dropout operations inside the mirrored structural predicate decoder", §4.1) and, in every
   selected cross-attention block, a fresh boolean mask on the attention logits ("each element in
   the attention matrix has an independent probability p to be set to −inf ... We generate a
   random mask per Transformer block independently", §3.2), through untied copies of the last
   projection layers ("we untie the last projection layer of the mirrored predicate decoder",
   §3.2) — the predicate classifier and the subject / object classifiers;
4. the KL between target and mirror on "the three label distributions" at "the last layer" (§3.2),
   each times λ (10 for all three, §4.1), is added to the host's loss dict as ``loss_align_predicate``,
   ``loss_align_subject`` and ``loss_align_object``. The predicate classifier is a sigmoid/focal one
   on VG (``MODEL.REL_DETR.FOCAL_LOSS.ENABLED``): its distribution is a Bernoulli per class; the
   subject and object classifiers are softmax over the object classes and no-object.

``MODEL.ALIGN.LOSS supervised`` is Table 3's "SA": "we construct a supervised relation alignment
module by following the exact same setting as the self-supervised alignment module except that we
remove the KL divergence loss and plug the same supervised loss in the mirrored relation predictor"
(§4.3), "two supervised classification losses on the original and mirrored predictors
respectively" (Table 3). Step 2 is skipped (without a KL there is no target); step 3 is unchanged;
step 4 is the host's own relation criterion (``rel_criterion``: its Hungarian matcher, the focal
predicate loss, the relation-vector and the subject / object box and class losses, and the indexing
loss where the entity indexing is learned) called on the mirror's last-level predictions exactly as
the host calls it on its own, each term weighted as the host weights it, times
``SUPERVISED_WEIGHT``, added as ``loss_align_sup_<term>``. The mirror's boxes and relation vector
come from the host's (shared) box and vector heads on the mirror's features, its entity indexing
from the host's graph assembling on its predictions; only the entity detector's outputs, which the
mirror does not rerun, are the clean pass's (detached).

In eval mode nothing of this runs: the hooks return at once and the model's outputs are the host's.
The plug-in's parameters live under ``sgg_plugins.*`` (no ``class_embed`` / ``bbox_embed`` in their
names, which SGTR's resume-time weight mapping would rewrite).
"""

import contextlib
import inspect
import logging

import torch
from torch import nn

from ...config import ConfigError
from ...regularizers.align import alignment_kl, attention_logit_mask, dropout_disabled, untied_linear_copy
from ..hooks import overridden_method, resolve

PLUGIN_MODULE_NAME = "sgg_plugins"
# MODEL.ALIGN.MASKED_DECODERS -> the decoder stacks (paths under relation_decoder) whose layers'
# cross-attention ``multihead_attn`` gets masks. §3.2: the structural predicate decoder "receives
# two inputs, the refined image feature from the relation image feature encoder, and the entity
# feature from the entity node generator", and both are "treated as key and value of its
# cross-attention Transformer blocks": in SGTR's code, the predicate sub-decoder attends to the
# image memory, the entity-aware subject and object sub-decoders to the entity features.
# "structural" (default) masks all three; the others are ablations.
DECODER_STACKS = {
    "structural": ("predicate_decoder.layers", "entities_aware_decoder.layers", "rel_ent_crs_decoder_layers_sub"),
    "predicate": ("predicate_decoder.layers",),
    "entity": ("entities_aware_decoder.layers", "rel_ent_crs_decoder_layers_sub"),
}
DEFAULT_MASKED_DECODERS = "structural"
TARGETS = ("predicate", "subject", "object")
# What the host's relation criterion reads besides the relation decoder's predictions: the entity
# detector's outputs (and precomputed proposals where a config loads them). The mirror does not rerun
# the entity detector, so these are the clean pass's, detached like the mirror's other inputs.
ENTITY_DETECTOR_PREDICTIONS = ("pred_logits", "pred_boxes", "precompute_prop")


def cross_attention_blocks(relation_decoder, masked_decoders):
    """The cross-attention modules of the selected stacks, each once (the object stack is also
    reachable as ``rel_ent_crs_decoder_layers_obj``: the same modules)."""
    blocks = []
    for path in DECODER_STACKS[masked_decoders]:
        try:
            stack = resolve(relation_decoder, path)
        except AttributeError:
            continue
        if stack is None:
            continue
        for layer in stack:
            if layer.multihead_attn not in blocks:
                blocks.append(layer.multihead_attn)
    return blocks


def _detached(value):
    if torch.is_tensor(value):
        return value.detach()
    if isinstance(value, (tuple, list)):
        return type(value)(_detached(v) for v in value)
    if isinstance(value, dict):
        return {k: _detached(v) for k, v in value.items()}
    return value


@contextlib.contextmanager
def masked_cross_attention(blocks, p, generator=None):
    """While the block runs, every call of each module in ``blocks`` gets a fresh mask on its
    attention logits (:func:`attention_logit_mask`), as the boolean ``attn_mask`` keyword.

    The host calls these modules by keyword with ``attn_mask=None``; a mask it passes itself is
    combined with ours (either masks a logit)."""
    def add_mask(module, args, kwargs):
        query = kwargs["query"] if "query" in kwargs else args[0]
        key = kwargs["key"] if "key" in kwargs else args[1]
        mask = attention_logit_mask(query.shape[1], module.num_heads, query.shape[0], key.shape[0], p,
                                    kwargs.get("key_padding_mask"), generator=generator, device=query.device)
        given = kwargs.get("attn_mask")
        if given is not None:
            if given.dtype != torch.bool:
                raise TypeError(f"MODEL.ALIGN masks combine with a boolean attn_mask only, the host gave {given.dtype}")
            mask = mask | (given if given.dim() == 3 else given.unsqueeze(0))
        return args, {**kwargs, "attn_mask": mask}

    handles = [block.register_forward_pre_hook(add_mask, with_kwargs=True) for block in blocks]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


class SGTRAlignment(nn.Module):
    """The plug-in's own parameters (the untied heads) and its training-time hooks on the model."""

    def __init__(self, model, align_cfg, masked_decoders=DEFAULT_MASKED_DECODERS):
        super().__init__()
        if not hasattr(model, "relation_decoder") or not hasattr(model, "rel_class_embed"):
            raise ConfigError("MODEL.ALIGN.ENABLED needs SGTR's one-stage model (a relation_decoder and "
                              "rel_class_embed): this experiment's net.py builds another architecture")
        if not getattr(model, "sub_class_embed", None) or not getattr(model, "obj_class_embed", None):
            raise ConfigError("MODEL.ALIGN on SGTR aligns the subject and object distributions of the "
                              "entity-aware decoder: set MODEL.REL_DETR.ENTITIES_AWARE_HEAD.ENABLED and CROSS_DECODER True")
        self.p = float(align_cfg.MASK_PROB)
        self.weight = float(align_cfg.WEIGHT)
        self.supervised = align_cfg.LOSS == "supervised"
        self.supervised_weight = float(align_cfg.SUPERVISED_WEIGHT)
        self.direction = align_cfg.KL_DIRECTION
        self.reduction = align_cfg.KL_REDUCTION
        self.tied = align_cfg.HEAD == "tied"
        self.predicate_distribution = "bernoulli" if model.cfg.MODEL.REL_DETR.FOCAL_LOSS.ENABLED else "softmax"
        self.blocks = cross_attention_blocks(model.relation_decoder, masked_decoders)
        if not self.blocks:
            raise ConfigError(f"MODEL.ALIGN.MASKED_DECODERS = {masked_decoders!r}: this SGTR model has none of "
                              f"{', '.join(DECODER_STACKS[masked_decoders])}")
        if not self.tied:
            # Names without `class_embed`: SGTR's resume-time weight mapping rewrites such keys.
            self.predicate_head = untied_linear_copy(model.rel_class_embed)
            self.subject_head = untied_linear_copy(model.sub_class_embed[-1])
            self.object_head = untied_linear_copy(model.obj_class_embed[-1])
            # The copies take the original heads' values at the first training step, after the host
            # has loaded its weights (vg_detr.pth maps the entity heads), unless a checkpoint of the
            # plug-in set them (then this flag was saved as True).
            self.register_buffer("heads_copied", torch.tensor(False))
        # Not a submodule: the host model owns this module, not the other way round.
        self.__dict__["host"] = model
        self.__dict__["clean"] = None
        self.__dict__["handles"] = [
            model.register_forward_pre_hook(self._before_host_forward),
            model.register_forward_hook(self._after_host_forward),
        ]

    # ------------------------------------------------------------------ heads
    def original_heads(self):
        model = self.host
        return model.rel_class_embed, model.sub_class_embed[-1], model.obj_class_embed[-1]

    def mirror_heads(self):
        if self.tied:
            return self.original_heads()
        return self.predicate_head, self.subject_head, self.object_head

    def _copy_heads_once(self):
        if self.tied or bool(self.heads_copied):
            return
        with torch.no_grad():
            for copy, original in zip(self.mirror_heads(), self.original_heads()):
                copy.weight.copy_(original.weight)
                copy.bias.copy_(original.bias)
            self.heads_copied.fill_(True)

    # ------------------------------------------------------------------ hooks
    def _before_host_forward(self, model, args):
        if self.clean is not None:  # the previous forward raised before its end: undo its recording
            self.clean[1].close()
        self.clean = None
        if not model.training:
            return
        decoder = model.relation_decoder
        record = {}
        original_encoder = decoder.rel_encoder
        original_queries = decoder.query_tgt_initialization

        def rel_encoder(*a, **k):
            record["encoder"] = original_encoder(*a, **k)
            return record["encoder"]

        def query_tgt_initialization(*a, **k):
            record["queries"] = original_queries(*a, **k)
            record["queries_cache"] = dict(decoder.queries_cache)
            return record["queries"]

        def call_hook(module, call_args, call_kwargs, output):
            record["call"] = (call_args, call_kwargs)

        stack = contextlib.ExitStack()
        stack.enter_context(overridden_method(decoder, "rel_encoder", rel_encoder))
        stack.enter_context(overridden_method(decoder, "query_tgt_initialization", query_tgt_initialization))
        handle = decoder.register_forward_hook(call_hook, with_kwargs=True)
        stack.callback(handle.remove)
        if self.supervised:
            self._record_supervision(model, record, stack)
        self.clean = (record, stack)

    @staticmethod
    def _record_supervision(model, record, stack):
        """What the mirror's supervised loss needs from the host's pass: the image sizes and entity
        features its graph assembling reads (the arguments of ``predict_rel_ent_semantics``) and the
        host's own call of its relation criterion (a copy of the predictions dict as the criterion
        saw it: the host adds ``aux_outputs`` to the same dict afterwards)."""
        original_semantics = model.predict_rel_ent_semantics
        semantics_signature = inspect.signature(original_semantics)

        def predict_rel_ent_semantics(*a, **k):
            record["semantics"] = semantics_signature.bind(*a, **k).arguments
            return original_semantics(*a, **k)

        def criterion_pre_hook(module, call_args, call_kwargs):
            predictions, *rest = call_args
            record["criterion_call"] = (dict(predictions), tuple(rest), dict(call_kwargs))

        stack.enter_context(overridden_method(model, "predict_rel_ent_semantics", predict_rel_ent_semantics))
        handle = model.rel_criterion.register_forward_pre_hook(criterion_pre_hook, with_kwargs=True)
        stack.callback(handle.remove)

    def _after_host_forward(self, model, args, output):
        if self.clean is None:
            return None
        record, stack = self.clean
        self.clean = None
        stack.close()
        if not model.training or not isinstance(output, dict) or "call" not in record:
            return None
        output.update(self.losses(record))
        return output

    # ------------------------------------------------------------------ passes
    def _structural_decoder_pass(self, record, masks):
        """The relation decoder on the clean pass's detached inputs, with its encoder output and
        initial queries replayed (detached), dropout off and, when ``masks``, masked cross-attention.
        Returns the last decoder level's (predicate, subject, object) features."""
        decoder = self.host.relation_decoder
        call_args, call_kwargs = _detached(record["call"])
        encoder_output = _detached(record["encoder"])
        queries = _detached(record["queries"])
        queries_cache = _detached(record["queries_cache"])
        saved_cache = decoder.queries_cache

        def replay_queries(*a, **k):
            decoder.queries_cache = dict(queries_cache)  # reset_tgt() reads the initial targets from it
            return queries

        with contextlib.ExitStack() as stack:
            stack.enter_context(overridden_method(decoder, "rel_encoder", lambda *a, **k: encoder_output))
            stack.enter_context(overridden_method(decoder, "query_tgt_initialization", replay_queries))
            stack.enter_context(dropout_disabled(decoder))
            if masks:
                stack.enter_context(masked_cross_attention(self.blocks, self.p))
            try:
                rel_rep, (sub_rep, obj_rep, _), _ = decoder(*call_args, **call_kwargs)
            finally:
                decoder.queries_cache = saved_cache  # the host's dynamic-query output reads it
        return rel_rep.feature[-1], sub_rep.feature[-1], obj_rep.feature[-1]

    def losses(self, record):
        self._copy_heads_once()
        if self.supervised:
            return self._supervised_losses(record)
        return self._kl_losses(record)

    def _kl_losses(self, record):
        """``loss_align_{predicate,subject,object}``, each λ · KL(target || mirror) at the last layer."""
        with torch.no_grad():
            targets = [head(feature) for head, feature in
                       zip(self.original_heads(), self._structural_decoder_pass(record, masks=False))]
        mirrors = [head(feature) for head, feature in
                   zip(self.mirror_heads(), self._structural_decoder_pass(record, masks=True))]
        distributions = (self.predicate_distribution, "softmax", "softmax")
        return {
            f"loss_align_{name}": self.weight * alignment_kl(mirror, target, direction=self.direction,
                                                             distribution=distribution, reduction=self.reduction)
            for name, mirror, target, distribution in zip(TARGETS, mirrors, targets, distributions)
        }

    def _mirror_predictions(self, record):
        """The mirror's last-level predictions in the form the host's relation criterion reads.

        As the host's forward builds its own (``OneStageEncDecVRD.forward`` and
        ``predict_rel_ent_semantics``): the predicate logits and the sigmoid relation vector from
        the relation features, the subject / object logits and sigmoid boxes from the entity-aware
        features, their box centres as ``pred_ent_rel_vec``, and the host's ``graph_assembling``
        for the entity indexing. The class logits go through the mirror's heads; the box and
        vector heads are the host's own.
        """
        model = self.host
        relation, subject, obj = self._structural_decoder_pass(record, masks=True)
        predicate_head, subject_head, object_head = self.mirror_heads()
        host_predictions, _, _ = record["criterion_call"]
        predictions = {k: _detached(v) for k, v in host_predictions.items() if k in ENTITY_DETECTOR_PREDICTIONS}
        subject_box = model.sub_bbox_embed[-1](subject).sigmoid()
        object_box = model.obj_bbox_embed[-1](obj).sigmoid()
        predictions.update({
            "pred_rel_logits": predicate_head(relation),
            "pred_rel_vec": model.rel_vector_embed(relation).sigmoid(),
            "pred_rel_obj_logits": object_head(obj),
            "pred_rel_obj_box": object_box,
            "pred_rel_sub_logits": subject_head(subject),
            "pred_rel_sub_box": subject_box,
            "pred_ent_rel_vec": torch.cat((subject_box[..., :2], object_box[..., :2]), dim=-1),
        })
        if model.entities_indexing_heads is not None:
            semantics = record["semantics"]
            sub_indexing, obj_indexing, sub_indexing_rule, obj_indexing_rule = model.graph_assembling(
                predictions, semantics["image_sizes"], _detached(semantics["ent_hs"][-1]), subject, obj)
            predictions.update({
                "sub_entities_indexing": sub_indexing,
                "obj_entities_indexing": obj_indexing,
                "sub_ent_indexing_rule": sub_indexing_rule,
                "obj_ent_indexing_rule": obj_indexing_rule,
            })
        return predictions

    def _supervised_losses(self, record):
        """Table 3 "SA": ``loss_align_sup_<term>`` for each loss term of the host's relation
        criterion on the mirror's predictions, weighted as the host weights it (``weight_dict``),
        times ``SUPERVISED_WEIGHT``.

        The criterion is called as the host calls it (the same targets and entity matching), on the
        last level only: "we only apply the alignment loss at the last layer" (§3.2), and SA follows
        "the exact same setting as the self-supervised alignment module". Its logged metrics
        (class errors, indexing accuracies) are not losses and are left out. The criterion keeps
        state between calls that the host's evaluation reads (its entity match cache): that state is
        put back as the host's own call left it.
        """
        model = self.host
        criterion = model.rel_criterion
        _, rest, call_kwargs = record["criterion_call"]
        predictions = self._mirror_predictions(record)
        host_state = {k: v for k, v in vars(criterion).items() if not k.startswith("_")}
        try:
            terms, _ = criterion(predictions, *rest, **call_kwargs)
        finally:
            vars(criterion).update(host_state)
        losses = {}
        for name, value in terms.items():
            if name.startswith("loss_"):
                weighted = value * model.weight_dict[name] if name in model.weight_dict else value  # as loss_eval
                losses[f"loss_align_sup_{name[len('loss_'):]}"] = self.supervised_weight * weighted
        return losses


def attach_alignment(model, align_cfg):
    """Add :class:`SGTRAlignment` to SGTR's built model as ``model.sgg_plugins``. Returns it."""
    masked = align_cfg.get("MASKED_DECODERS", DEFAULT_MASKED_DECODERS)
    plugin = SGTRAlignment(model, align_cfg, masked)
    model.add_module(PLUGIN_MODULE_NAME, plugin)
    if plugin.supervised:
        loss = f"the host's relation criterion on the mirror (Table 3 'SA'), x{plugin.supervised_weight:g}"
    else:
        loss = f"KL (predicate {plugin.predicate_distribution}), λ={plugin.weight:g}"
    logging.getLogger("sgg_plugins").info(
        "sgg-plugins: MODEL.ALIGN on SGTR: masks (p=%g) on %d cross-attention blocks (%s), %s heads, %s",
        plugin.p, len(plugin.blocks), masked, "tied" if plugin.tied else "untied linear", loss)
    return plugin
