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
with ``attn_mask=None`` and the memory's key padding mask; dropout everywhere; a training forward
that returns a loss dict weighted by ``weight_dict``.
"""

import copy

import torch
from easydict import EasyDict
from torch import nn
from torch.nn import functional as F

D_MODEL, HEADS, FFN, LEVELS = 16, 2, 32, 3
NUM_ENTITY_CLASSES, NUM_PREDICATES = 6, 5  # entity classes + no-object column


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


class FakeSGTR(nn.Module):
    """``OneStageEncDecVRD``'s heads and loss dict around the relation decoder."""

    def __init__(self, focal=True, num_queries=4, num_entities=5):
        super().__init__()
        self.cfg = EasyDict(MODEL=EasyDict(REL_DETR=EasyDict(FOCAL_LOSS=EasyDict(ENABLED=focal))))
        self.backbone = nn.Conv2d(3, D_MODEL, 1)
        self.entity_queries = nn.Embedding(num_entities, D_MODEL)
        self.entity_decoder = nn.Sequential(nn.Linear(D_MODEL, D_MODEL), nn.Dropout(0.1))  # the frozen DETR's part
        self.rel_input_proj = nn.Conv2d(D_MODEL, D_MODEL, 1)
        self.relation_decoder = RelationDecoder(num_queries)
        self.rel_query_embed = nn.Embedding(num_queries, D_MODEL)
        self.rel_query_pos_embed = nn.Embedding(num_queries, D_MODEL)
        self.rel_class_embed = nn.Linear(D_MODEL, NUM_PREDICATES if focal else NUM_PREDICATES + 1)
        sub, obj = nn.Linear(D_MODEL, NUM_ENTITY_CLASSES), nn.Linear(D_MODEL, NUM_ENTITY_CLASSES)
        self.relation_decoder.sub_class_embed = sub  # the host also hangs them on the decoder
        self.relation_decoder.obj_class_embed = obj
        self.sub_class_embed = nn.ModuleList([sub for _ in range(LEVELS)])  # references to one Linear
        self.obj_class_embed = nn.ModuleList([obj for _ in range(LEVELS)])
        self.weight_dict = {"loss_rel_focal": 1.0, "loss_sub_ce": 0.3, "loss_obj_ce": 0.3}

    def forward(self, images, mask, rel_labels, sub_labels, obj_labels):
        src = self.backbone(images)
        bs = src.shape[0]
        ent_hs = self.entity_decoder(self.entity_queries.weight[None, :, None].expand(2, -1, bs, -1)
                                     + src.mean((2, 3))[None, None])  # levels, entities, batch, dim
        ent_hs = ent_hs.transpose(1, 2)  # levels, batch, entities, dim
        rel_hs, (sub_rep, obj_rep, _), _ = self.relation_decoder(
            self.rel_input_proj(src), mask, self.rel_query_embed.weight, src, self.rel_query_pos_embed.weight,
            shared_encoder_memory=src, ent_hs=ent_hs, ent_coords=None, ent_cls=None)
        rel_logits = self.rel_class_embed(rel_hs.feature)[-1]
        sub_logits = torch.stack([self.sub_class_embed[i](sub_rep.feature[i]) for i in range(LEVELS)])[-1]
        obj_logits = torch.stack([self.obj_class_embed[i](obj_rep.feature[i]) for i in range(LEVELS)])[-1]
        if not self.training:
            return {"pred_rel_logits": rel_logits, "pred_rel_sub_logits": sub_logits, "pred_rel_obj_logits": obj_logits}
        losses = {
            "loss_rel_focal": F.binary_cross_entropy_with_logits(
                rel_logits, F.one_hot(rel_labels, rel_logits.shape[-1]).float()),
            "loss_sub_ce": F.cross_entropy(sub_logits.flatten(0, 1), sub_labels.flatten()),
            "loss_obj_ce": F.cross_entropy(obj_logits.flatten(0, 1), obj_labels.flatten()),
            "rel_class_error": torch.tensor(50.0),
        }
        return {k: v * self.weight_dict[k] if k in self.weight_dict else v for k, v in losses.items()}


def batch(seed=0, bs=2, hw=(3, 4), num_queries=4, padded_columns=1):
    """Inputs for FakeSGTR: images, a key padding mask (the right columns padded), labels."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(bs, 3, *hw, generator=g)
    mask = torch.zeros(bs, *hw, dtype=torch.bool)
    if padded_columns:
        mask[1, :, -padded_columns:] = True
    return (images, mask, torch.randint(0, NUM_PREDICATES, (bs, num_queries), generator=g),
            torch.randint(0, NUM_ENTITY_CLASSES, (bs, num_queries), generator=g),
            torch.randint(0, NUM_ENTITY_CLASSES, (bs, num_queries), generator=g))


def align_cfg(**overrides):
    from sgg_plugins.config import ALIGN_DEFAULTS

    cfg = EasyDict(dict(ALIGN_DEFAULTS, ENABLED=True, HEAD="untied_linear", MASKED_DECODERS="structural"))
    cfg.update(overrides)
    return cfg
