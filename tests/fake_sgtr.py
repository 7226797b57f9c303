"""A small stand-in for SGTR's one-stage model with the host's module layout and call signatures.

What the alignment adapter relies on, as SGTR has it (``onestg_encdec_vrd.py``,
``predicate_node_generator.py``, ``cvpods/modeling/backbone/transformer.py``): a meta-architecture
with ``relation_decoder``, ``rel_class_embed`` (sigmoid/focal: no background column) and
``sub_class_embed`` / ``obj_class_embed`` as ModuleLists of one shared Linear per decoder level
(also referenced from inside the decoder); a relation decoder whose ``forward`` calls its
``rel_encoder`` and ``query_tgt_initialization`` methods, keeps the initial queries in
``queries_cache`` for ``reset_tgt``, and runs three decoder stacks level by level
(``predicate_decoder.layers``, ``entities_aware_decoder.layers`` = ``rel_ent_crs_decoder_layers_obj``,
``rel_ent_crs_decoder_layers_sub``); decoder layers that call their ``multihead_attn`` by keyword
with ``attn_mask=None`` and the memory's key padding mask; dropout everywhere; box and
relation-vector heads (``sub_bbox_embed`` / ``obj_bbox_embed`` like the class heads,
``rel_vector_embed``); ``predict_rel_ent_semantics`` and ``graph_assembling`` (rule-based, without
gradient, as on VG) filling the predictions dict; a training forward that calls its relation
criterion ``rel_criterion(semantic_predictions, targets, det_match_res=...)`` -- a Hungarian
matcher on class, relation-vector, box and indexing costs, then the loss terms, returning
``(losses, match_res)`` and keeping an entity match cache between calls -- and weights the terms by
``weight_dict``; in eval, the predictions dict.
"""

import copy

import torch
from easydict import EasyDict
from scipy.optimize import linear_sum_assignment
from torch import nn
from torch.nn import functional as F

D_MODEL, HEADS, FFN, LEVELS = 16, 2, 32, 3
NUM_ENTITY_CLASSES, NUM_PREDICATES = 6, 5  # entity classes + no-object column; predicates 1..5, 0 = none
NUM_GT_ENTITIES, NUM_GT_RELATIONS = 4, 3  # per image


class Representation:
    def __init__(self, features):
        self.feature = torch.stack(features).transpose(1, 2)  # levels, batch, queries, dim


class AttentionAdaptWeight(nn.MultiheadAttention):
    """The host's ``MultiheadAttentionAdaptWeight``: keyword call, a third output (value sum)."""

    def forward(self, query, key, value, adaptive_att_weight=None, key_padding_mask=None, need_weights=True,
                attn_mask=None):
        out, weights = super().forward(query, key, value, key_padding_mask=key_padding_mask, need_weights=True,
                                       attn_mask=attn_mask, average_attn_weights=False)
        self.last_attention = weights
        return out, weights, None


class DecoderLayer(nn.Module):
    """Pre-norm decoder layer (PRE_NORM True on VG), the host's ``forward_pre`` order."""

    def __init__(self, dropout=0.1):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(D_MODEL, HEADS, dropout=dropout)
        self.multihead_attn = AttentionAdaptWeight(D_MODEL, HEADS, dropout=dropout)
        self.linear1, self.linear2 = nn.Linear(D_MODEL, FFN), nn.Linear(FFN, D_MODEL)
        self.norm1, self.norm2, self.norm3 = (nn.LayerNorm(D_MODEL) for _ in range(3))
        self.dropout, self.dropout1, self.dropout2, self.dropout3 = (nn.Dropout(dropout) for _ in range(4))

    def forward(self, tgt, memory, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
                memory_key_padding_mask=None, pos=None, query_pos=None, adaptive_att_weight=None,
                return_value_sum=False):
        tgt2 = self.norm1(tgt)
        q = k = tgt2 + query_pos
        tgt = tgt + self.dropout1(self.self_attn(q, k, value=tgt2)[0])
        tgt2 = self.norm2(tgt)
        tgt2, att_weight, value_sum = self.multihead_attn(
            query=tgt2 + query_pos, key=memory if pos is None else memory + pos, value=memory,
            attn_mask=memory_mask, key_padding_mask=memory_key_padding_mask, adaptive_att_weight=adaptive_att_weight)
        tgt = tgt + self.dropout2(tgt2)
        tgt2 = self.norm3(tgt)
        tgt = tgt + self.dropout3(self.linear2(self.dropout(F.relu(self.linear1(tgt2)))))
        return {"tgt": tgt, "att_weight": None, "value_sum": value_sum}


class Stack(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer() for _ in range(LEVELS))


class RelationDecoder(nn.Module):
    """``PredicateNodeGenerator``'s structure and control flow, small."""

    def __init__(self, num_queries):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(D_MODEL, D_MODEL), nn.Dropout(0.1))
        self.predicate_decoder = Stack()
        self.predicate_sub_decoder_layers = self.predicate_decoder.layers
        self.rel_decoder_norm = nn.LayerNorm(D_MODEL)
        self.rel_query_embed = nn.Embedding(num_queries, D_MODEL)
        self.rel_query_embed_sub = nn.Embedding(num_queries, D_MODEL)
        self.rel_query_embed_obj = nn.Embedding(num_queries, D_MODEL)
        self.rel_q_gen = nn.Linear(D_MODEL, 3 * D_MODEL)  # the dynamic query generator
        self.entities_aware_decoder = Stack()
        self.rel_ent_crs_decoder_layers_obj = self.entities_aware_decoder.layers
        self.rel_ent_crs_decoder_layers_sub = copy.deepcopy(self.entities_aware_decoder.layers)
        self.rel_ent_crs_decoder_norm = nn.LayerNorm(D_MODEL)
        self.ent_rel_fuse_fc_obj = nn.Sequential(nn.Linear(D_MODEL, D_MODEL))
        self.ent_rel_fuse_fc_sub = copy.deepcopy(self.ent_rel_fuse_fc_obj)
        self.queries_cache = {}

    def rel_encoder(self, src, src_pos_embed, shared_encoder_memory, mask_flatten):
        bs, c, h, w = shared_encoder_memory.shape
        memory = self.encoder(shared_encoder_memory.flatten(2).permute(2, 0, 1))
        return bs, h, w, memory

    def query_tgt_initialization(self, ent_hs, ent_coords):
        bs = ent_hs.shape[1]
        self.queries_cache = {}
        obj_w, sub_w, rel_w = (e.weight.unsqueeze(1).repeat(1, bs, 1) for e in (
            self.rel_query_embed_obj, self.rel_query_embed_sub, self.rel_query_embed))
        dynamic = self.rel_q_gen(rel_w + ent_hs[-1].mean(1)[None])  # conditioned on the entities
        sub_t, obj_t, rel_t = dynamic.split(D_MODEL, dim=-1)
        self.queries_cache.update({"d_sub": sub_t, "d_obj": obj_t, "d_rel": rel_t, "dynamic_query": dynamic})
        return obj_w, sub_w, rel_w

    def reset_tgt(self):
        return (self.queries_cache["d_rel"].clone(), self.queries_cache["d_obj"].clone(),
                self.queries_cache["d_sub"].clone())

    def forward(self, src, mask, query_embed, src_pos_embed, rel_query_pos_embed, shared_encoder_memory=None,
                ent_hs=None, ent_coords=None, ent_cls=None):
        src_pos_embed = src_pos_embed.flatten(2).permute(2, 0, 1)
        mask_flatten = mask.flatten(1)
        bs, h, w, rel_memory = self.rel_encoder(src, src_pos_embed, shared_encoder_memory, mask_flatten)
        ent_hs_input = ent_hs[-1].permute(1, 0, 2)
        obj_q, sub_q, rel_q = self.query_tgt_initialization(ent_hs, ent_coords)
        rel_tgt, obj_tgt, sub_tgt = self.reset_tgt()
        rel_all, sub_all, obj_all = [], [], []
        for idx in range(LEVELS):
            out = self.predicate_sub_decoder_layers[idx](
                rel_tgt, rel_memory, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
                memory_key_padding_mask=mask_flatten, pos=src_pos_embed, query_pos=rel_q, adaptive_att_weight=None,
                return_value_sum=True)
            rel_tgt = self.rel_decoder_norm(out["tgt"])
            sub_out = self.rel_ent_crs_decoder_layers_sub[idx](
                sub_tgt, ent_hs_input, memory_key_padding_mask=None, pos=None, query_pos=sub_q,
                adaptive_att_weight=None, return_value_sum=True)
            obj_out = self.rel_ent_crs_decoder_layers_obj[idx](
                obj_tgt, ent_hs_input, memory_key_padding_mask=None, pos=None, query_pos=obj_q,
                adaptive_att_weight=None, return_value_sum=True)
            sub_tgt = self.rel_ent_crs_decoder_norm(sub_out["tgt"])
            obj_tgt = self.rel_ent_crs_decoder_norm(obj_out["tgt"])
            rel_tgt = rel_tgt + F.relu(self.ent_rel_fuse_fc_sub(sub_tgt) + self.ent_rel_fuse_fc_obj(obj_tgt))
            rel_all.append(rel_tgt)
            sub_all.append(sub_tgt)
            obj_all.append(obj_tgt)
        return Representation(rel_all), (Representation(sub_all), Representation(obj_all), None), {}


class EntitiesIndexingHeadRuleBased(nn.Module):
    """Rule-based graph assembling: each query's closeness of its subject / object box to each
    detected entity, without gradient."""

    @torch.no_grad()
    def forward(self, outputs, target_sizes):
        return (-torch.cdist(outputs["pred_rel_sub_box"], outputs["pred_boxes"], p=1),
                -torch.cdist(outputs["pred_rel_obj_box"], outputs["pred_boxes"], p=1))


class RelHungarianMatcher(nn.Module):
    """The host's matcher: one-to-one assignment of relation queries to ground-truth triplets."""

    @torch.no_grad()
    def forward(self, outputs, targets, ent_match=True, return_init_idx=False, det_match_res=None):
        indices = []
        for b, t in enumerate(targets):
            sub_gt, obj_gt = t["gt_rel_pair_tensor"].unbind(1)
            logits = outputs["pred_rel_logits"][b]
            if logits.shape[-1] == NUM_PREDICATES:  # focal: sigmoid, no background column
                cost_class = -logits.sigmoid()[:, t["rel_labels"] - 1]
            else:
                cost_class = -logits.softmax(-1)[:, t["rel_labels"]]
            cost_vec = torch.cdist(outputs["pred_rel_vec"][b], t["rel_vector"], p=1)
            cost_box = (torch.cdist(outputs["pred_rel_sub_box"][b], t["boxes"][sub_gt], p=1)
                        + torch.cdist(outputs["pred_rel_obj_box"][b], t["boxes"][obj_gt], p=1))
            cost_ent = -(outputs["pred_rel_sub_logits"][b].softmax(-1)[:, t["labels"][sub_gt]]
                         + outputs["pred_rel_obj_logits"][b].softmax(-1)[:, t["labels"][obj_gt]])
            # indexing: the query's score for the detected entity nearest to each ground-truth entity
            nearest = torch.cdist(t["boxes"], outputs["pred_boxes"][b], p=1).argmin(-1)
            cost_index = -(outputs["sub_entities_indexing"][b][:, nearest[sub_gt]]
                           + outputs["obj_entities_indexing"][b][:, nearest[obj_gt]])
            cost = cost_class + cost_vec + cost_box + cost_ent + 0.1 * cost_index
            rows, cols = linear_sum_assignment(cost.cpu().numpy())
            indices.append((torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)))
        return indices, None, {}


class RelSetCriterion(nn.Module):
    """The host's relation criterion: the matcher, then each loss of ``losses`` on the matches."""

    def __init__(self, losses, empty_weight=0.1):
        super().__init__()
        self.matcher = RelHungarianMatcher()
        self.losses = losses
        self.loss_map = {"rel_labels": self.loss_labels, "rel_labels_fl": self.loss_labels_fl,
                         "relation_vec": self.loss_relation_vec, "rel_entities_aware": self.loss_entities_aware,
                         "rel_entities_indexing": self.loss_entities_indexing}
        entities_empty_weight = torch.ones(NUM_ENTITY_CLASSES)
        entities_empty_weight[-1] = empty_weight
        self.register_buffer("entities_empty_weight", entities_empty_weight)
        self.entities_match_cache = {}
        self.det_match_res = None

    @staticmethod
    def _src_idx(indices):
        return (torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)]),
                torch.cat([src for src, _ in indices]))

    @staticmethod
    def _matched(targets, indices, key, role=None):
        if role is None:
            return torch.cat([t[key][j] for t, (_, j) in zip(targets, indices)])
        return torch.cat([t[key][t["gt_rel_pair_tensor"][j, role]] for t, (_, j) in zip(targets, indices)])

    def loss_labels_fl(self, outputs, targets, indices, num_gt_rel):
        logits = outputs["pred_rel_logits"]
        onehot = torch.zeros(logits.shape[0], logits.shape[1], NUM_PREDICATES + 1)
        onehot[self._src_idx(indices) + (self._matched(targets, indices, "rel_labels"),)] = 1
        loss = F.binary_cross_entropy_with_logits(logits, onehot[..., 1:], reduction="sum") / num_gt_rel
        with torch.no_grad():
            error = 100 - 100 * (logits[self._src_idx(indices)].argmax(-1) + 1
                                 == self._matched(targets, indices, "rel_labels")).float().mean()
        return {"loss_rel_focal": loss, "rel_class_error": error}

    def loss_labels(self, outputs, targets, indices, num_gt_rel):
        logits = outputs["pred_rel_logits"]
        labels = torch.zeros(logits.shape[:2], dtype=torch.int64)
        labels[self._src_idx(indices)] = self._matched(targets, indices, "rel_labels")
        return {"loss_rel_ce": F.cross_entropy(logits.flatten(0, 1), labels.flatten())}

    def loss_relation_vec(self, outputs, targets, indices, num_gt_rel):
        src = outputs["pred_rel_vec"][self._src_idx(indices)]
        return {"loss_rel_vector": F.l1_loss(src, self._matched(targets, indices, "rel_vector"),
                                             reduction="sum") / num_gt_rel}

    def loss_entities_aware(self, outputs, targets, indices, num_gt_rel):
        losses = {}
        for role_id, role in enumerate(("sub", "obj")):
            boxes = outputs[f"pred_rel_{role}_box"][self._src_idx(indices)]
            losses[f"loss_aux_{role}_entities_boxes"] = F.l1_loss(
                boxes, self._matched(targets, indices, "boxes", role_id), reduction="sum") / num_gt_rel
            logits = outputs[f"pred_rel_{role}_logits"]
            labels = torch.full(logits.shape[:2], NUM_ENTITY_CLASSES - 1, dtype=torch.int64)
            labels[self._src_idx(indices)] = self._matched(targets, indices, "labels", role_id)
            losses[f"loss_aux_{role}_entities_labels_ce"] = F.cross_entropy(
                logits.flatten(0, 1), labels.flatten(), self.entities_empty_weight)
        return losses

    def loss_entities_indexing(self, outputs, targets, indices, num_gt_rel):
        """Rule-based indexing (VG): no loss, an accuracy, and the detection-to-ground-truth match
        kept in ``entities_match_cache`` (the host's evaluation reads it later)."""
        if self.entities_match_cache is None:
            self.entities_match_cache = {}
        if self.entities_match_cache.get("sub") is None:
            self.entities_match_cache["sub"] = [torch.cdist(t["boxes"], outputs["pred_boxes"][b], p=1).argmin(-1)
                                                for b, t in enumerate(targets)]
        hits = [outputs["sub_ent_indexing_rule"][b][src].argmax(-1)
                == self.entities_match_cache["sub"][b][t["gt_rel_pair_tensor"][tgt, 0]]
                for b, (t, (src, tgt)) in enumerate(zip(targets, indices))]
        return {"ent_idx_acc_top1-r": torch.cat(hits).float().mean()}

    def forward(self, outputs, targets, match_res=None, det_match_res=None, entities_match_cache=None):
        self.det_match_res = det_match_res
        num_gt_rel = max(sum(len(t["rel_labels"]) for t in targets), 1)
        self.entities_match_cache = entities_match_cache
        indices, match_cost, detailed_cost = self.matcher(outputs, targets, det_match_res=det_match_res)
        losses = {}
        for loss in self.losses:
            losses.update(self.loss_map[loss](outputs, targets, indices, num_gt_rel))
        return losses, (indices, match_cost, detailed_cost)


class FakeSGTR(nn.Module):
    """``OneStageEncDecVRD``'s heads, prediction assembly and loss around the relation decoder."""

    def __init__(self, focal=True, num_queries=4, num_entities=5):
        super().__init__()
        self.cfg = EasyDict(MODEL=EasyDict(REL_DETR=EasyDict(FOCAL_LOSS=EasyDict(ENABLED=focal))))
        self.backbone = nn.Conv2d(3, D_MODEL, 1)
        self.entity_queries = nn.Embedding(num_entities, D_MODEL)
        self.entity_decoder = nn.Sequential(nn.Linear(D_MODEL, D_MODEL), nn.Dropout(0.1))  # the frozen DETR's part
        self.class_embed = nn.Linear(D_MODEL, NUM_ENTITY_CLASSES)  # the entity detector's heads
        self.bbox_embed = nn.Linear(D_MODEL, 4)
        self.rel_input_proj = nn.Conv2d(D_MODEL, D_MODEL, 1)
        self.relation_decoder = RelationDecoder(num_queries)
        self.rel_query_embed = nn.Embedding(num_queries, D_MODEL)
        self.rel_query_pos_embed = nn.Embedding(num_queries, D_MODEL)
        self.rel_class_embed = nn.Linear(D_MODEL, NUM_PREDICATES if focal else NUM_PREDICATES + 1)
        self.rel_vector_embed = nn.Linear(D_MODEL, 4)
        sub, obj = nn.Linear(D_MODEL, NUM_ENTITY_CLASSES), nn.Linear(D_MODEL, NUM_ENTITY_CLASSES)
        sub_box, obj_box = nn.Linear(D_MODEL, 4), nn.Linear(D_MODEL, 4)
        self.relation_decoder.sub_class_embed = sub  # the host also hangs them on the decoder
        self.relation_decoder.obj_class_embed = obj
        self.relation_decoder.sub_bbox_embed = sub_box
        self.relation_decoder.obj_bbox_embed = obj_box
        self.sub_class_embed = nn.ModuleList([sub for _ in range(LEVELS)])  # references to one Linear
        self.obj_class_embed = nn.ModuleList([obj for _ in range(LEVELS)])
        self.sub_bbox_embed = nn.ModuleList([sub_box for _ in range(LEVELS)])
        self.obj_bbox_embed = nn.ModuleList([obj_box for _ in range(LEVELS)])
        self.entities_indexing_heads_rule = EntitiesIndexingHeadRuleBased()
        self.entities_indexing_heads = self.entities_indexing_heads_rule  # INDEXING_TYPE rule_base (VG)
        self.weight_dict = {"loss_rel_focal": 1.0, "loss_rel_ce": 1.0, "loss_rel_vector": 1.0,
                            "loss_aux_sub_entities_boxes": 0.5, "loss_aux_obj_entities_boxes": 0.5,
                            "loss_aux_sub_entities_labels_ce": 0.3, "loss_aux_obj_entities_labels_ce": 0.3}
        self.rel_criterion = RelSetCriterion(["relation_vec", "rel_entities_aware", "rel_entities_indexing",
                                              "rel_labels_fl" if focal else "rel_labels"])

    def forward(self, images, mask, targets):
        src = self.backbone(images)
        bs = src.shape[0]
        ent_hs = self.entity_decoder(self.entity_queries.weight[None, :, None].expand(2, -1, bs, -1)
                                     + src.mean((2, 3))[None, None])  # levels, entities, batch, dim
        ent_hs = ent_hs.transpose(1, 2)  # levels, batch, entities, dim
        ent_cls_pres, ent_box_pred = self.class_embed(ent_hs)[-1], self.bbox_embed(ent_hs).sigmoid()[-1]
        image_sizes = torch.tensor([list(images.shape[-2:])] * bs)
        rel_hs, ext_inter_feats, rel_decoder_out_res = self.relation_decoder(
            self.rel_input_proj(src), mask, self.rel_query_embed.weight, src, self.rel_query_pos_embed.weight,
            shared_encoder_memory=src, ent_hs=ent_hs, ent_coords=ent_box_pred, ent_cls=ent_cls_pres)
        pred_rel_logits = self.rel_class_embed(rel_hs.feature)
        pred_rel_vec = self.rel_vector_embed(rel_hs.feature).sigmoid()
        semantic_predictions = {"pred_logits": ent_cls_pres, "pred_boxes": ent_box_pred,
                                "pred_rel_logits": pred_rel_logits[-1], "pred_rel_vec": pred_rel_vec[-1]}
        self.predict_rel_ent_semantics(ent_hs, ext_inter_feats, image_sizes, rel_hs, semantic_predictions,
                                       rel_decoder_out_res)
        if not self.training:
            return semantic_predictions
        loss_dict, _ = self.rel_criterion(semantic_predictions, targets, det_match_res=None)
        return {k: v * self.weight_dict[k] if k in self.weight_dict else v for k, v in loss_dict.items()}

    def predict_rel_ent_semantics(self, ent_hs, ext_inter_feats, image_sizes, rel_hs, semantic_predictions,
                                  rel_decoder_out_res):
        sub_hs, obj_hs = ext_inter_feats[0].feature, ext_inter_feats[1].feature
        sub_logits = torch.stack([self.sub_class_embed[i](sub_hs[i]) for i in range(LEVELS)])
        sub_box = torch.stack([self.sub_bbox_embed[i](sub_hs[i]).sigmoid() for i in range(LEVELS)])
        obj_logits = torch.stack([self.obj_class_embed[i](obj_hs[i]) for i in range(LEVELS)])
        obj_box = torch.stack([self.obj_bbox_embed[i](obj_hs[i]).sigmoid() for i in range(LEVELS)])
        semantic_predictions.update({
            "pred_rel_obj_logits": obj_logits[-1], "pred_rel_obj_box": obj_box[-1],
            "pred_rel_sub_logits": sub_logits[-1], "pred_rel_sub_box": sub_box[-1],
            "pred_ent_rel_vec": torch.cat((sub_box[..., :2], obj_box[..., :2]), dim=-1)[-1]})
        if self.entities_indexing_heads is not None:
            sub_idx, obj_idx, sub_rule, obj_rule = self.graph_assembling(
                semantic_predictions, image_sizes, ent_hs[-1], sub_hs[-1], obj_hs[-1])
            semantic_predictions.update({"sub_entities_indexing": sub_idx, "obj_entities_indexing": obj_idx,
                                         "sub_ent_indexing_rule": sub_rule, "obj_ent_indexing_rule": obj_rule})

    def graph_assembling(self, out, image_sizes, ent_hs, rel_hs_ent_aware_sub, rel_hs_ent_aware_obj):
        sub_rule, obj_rule = self.entities_indexing_heads_rule(out, image_sizes)
        return sub_rule, obj_rule, sub_rule, obj_rule


def batch(seed=0, bs=2, hw=(3, 4), padded_columns=1):
    """Inputs for FakeSGTR: images, a key padding mask (the right columns padded), and the targets
    as the host's ``convert_anno_format`` makes them (cxcywh boxes in [0, 1], 0-based entity
    labels, 1-based predicates, subject / object indices, relation vectors of the box centres)."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(bs, 3, *hw, generator=g)
    mask = torch.zeros(bs, *hw, dtype=torch.bool)
    if padded_columns:
        mask[1, :, -padded_columns:] = True
    targets = []
    for _ in range(bs):
        boxes = torch.cat([0.2 + 0.6 * torch.rand(NUM_GT_ENTITIES, 2, generator=g),
                           0.1 + 0.3 * torch.rand(NUM_GT_ENTITIES, 2, generator=g)], dim=1)
        pairs = torch.stack([torch.randperm(NUM_GT_ENTITIES, generator=g)[:2] for _ in range(NUM_GT_RELATIONS)])
        targets.append({
            "boxes": boxes,
            "labels": torch.randint(0, NUM_ENTITY_CLASSES - 1, (NUM_GT_ENTITIES,), generator=g),
            "gt_rel_pair_tensor": pairs,
            "rel_labels": torch.randint(1, NUM_PREDICATES + 1, (NUM_GT_RELATIONS,), generator=g),
            "rel_vector": torch.cat((boxes[pairs[:, 0], :2], boxes[pairs[:, 1], :2]), dim=1),
        })
    return images, mask, targets


def align_cfg(**overrides):
    from sgg_plugins.config import ALIGN_DEFAULTS

    cfg = EasyDict(dict(ALIGN_DEFAULTS, ENABLED=True, HEAD="untied_linear", MASKED_DECODERS="structural"))
    cfg.update(overrides)
    return cfg
