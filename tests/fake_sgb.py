"""Small stand-ins for SGB's relation predictors, for host-free tests of the adapter.

They follow the host's real signatures and module names (``context_layer``, ``edge_ctx_rnn`` fed a
PackedSequence, ``post_emb``, ``rel_compress``, ``freq_bias.obj_baseline``, a BatchNorm inside the
context, VCTree's module-level forest builder, IMP's GRU cell called once per iteration), written
small and in our own words; the numbers they compute are not the host's, only the plumbing is.
"""

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence
from yacs.config import CfgNode

from sgg_plugins.config import add_sgg_plugins_config

NUM_OBJ_CLASSES = 6
NUM_REL_CLASSES = 5
IN_CHANNELS = 12
HIDDEN = 8
POOLING = 10


class FakeBoxList:
    def __init__(self, labels):
        self.fields = {"labels": labels}

    def get_field(self, name):
        return self.fields[name]

    def __len__(self):
        return len(self.fields["labels"])


def make_cfg(predictor="MotifPredictor", **plugin_opts):
    cfg = CfgNode()
    cfg.MODEL = CfgNode()
    cfg.MODEL.ROI_RELATION_HEAD = CfgNode()
    cfg.MODEL.ROI_RELATION_HEAD.PREDICTOR = predictor
    cfg.MODEL.ROI_RELATION_HEAD.CONTEXT_HIDDEN_DIM = HIDDEN
    add_sgg_plugins_config(cfg)
    for key, value in plugin_opts.items():
        node, name = key.split("_", 1)
        cfg.MODEL[node][name] = value
    return cfg


class FrequencyBias(nn.Module):
    def __init__(self):
        super().__init__()
        self.obj_baseline = nn.Embedding(NUM_OBJ_CLASSES * NUM_OBJ_CLASSES, NUM_REL_CLASSES)

    def index_with_labels(self, labels):
        return self.obj_baseline(labels[:, 0] * NUM_OBJ_CLASSES + labels[:, 1])


def _packed(x):
    # One image per sequence in the host; a single sequence keeps the fixture small.
    return PackedSequence(x, torch.ones(x.shape[0], dtype=torch.long))


class LSTMContext(nn.Module):
    def __init__(self, dropout=0.0):
        super().__init__()
        self.pos_embed = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
        self.obj_ctx_rnn = nn.LSTM(IN_CHANNELS + 4, HIDDEN, bidirectional=True)
        self.lin_obj_h = nn.Linear(2 * HIDDEN, HIDDEN)
        self.obj_embed2 = nn.Embedding(NUM_OBJ_CLASSES, 4)
        self.edge_ctx_rnn = nn.LSTM(4 + IN_CHANNELS + HIDDEN, HIDDEN, num_layers=2, dropout=dropout,
                                    bidirectional=True)
        self.lin_edge_h = nn.Linear(2 * HIDDEN, HIDDEN)

    def obj_ctx(self, obj_feats, labels):
        encoded = self.lin_obj_h(self.obj_ctx_rnn(_packed(obj_feats))[0].data)
        return None, labels, encoded

    def forward(self, x, proposals, logger=None):
        labels = torch.cat([p.get_field("labels") for p in proposals])
        boxes = torch.stack([labels.float(), labels.float() * 2, torch.ones_like(labels.float()),
                             torch.arange(len(labels)).float()], 1)
        ctx = self.obj_ctx(torch.cat([x, self.pos_embed(boxes)], 1), labels)
        obj_preds, obj_ctx = ctx[1], ctx[2] if ctx[2] is not None else ctx[0]
        edge_in = torch.cat([self.obj_embed2(obj_preds), x, obj_ctx], 1)
        edge_ctx = self.lin_edge_h(self.edge_ctx_rnn(_packed(edge_in))[0].data)
        obj_dists = nn.functional.one_hot(labels, NUM_OBJ_CLASSES).float()
        return obj_dists, obj_preds, edge_ctx, None


class MotifPredictor(nn.Module):
    context_class = LSTMContext

    def __init__(self, config, in_channels, dropout=0.0):
        super().__init__()
        self.context_layer = self.context_class(dropout)
        self.post_emb = nn.Linear(HIDDEN, 2 * HIDDEN)
        self.post_cat = nn.Linear(2 * HIDDEN, POOLING)
        self.rel_compress = nn.Linear(POOLING, NUM_REL_CLASSES)
        self.freq_bias = FrequencyBias()

    def pair_reps(self, edge_ctx, obj_preds, proposals, rel_pair_idxs):
        reps = self.post_emb(edge_ctx).view(-1, 2, HIDDEN)
        num_objs = [len(p) for p in proposals]
        prods, pair_preds = [], []
        for pairs, head, tail, preds in zip(rel_pair_idxs, reps[:, 0].split(num_objs),
                                            reps[:, 1].split(num_objs), obj_preds.split(num_objs)):
            prods.append(torch.cat([head[pairs[:, 0]], tail[pairs[:, 1]]], 1))
            pair_preds.append(torch.stack([preds[pairs[:, 0]], preds[pairs[:, 1]]], 1))
        return torch.cat(prods), torch.cat(pair_preds)

    def forward(self, proposals, rel_pair_idxs, rel_labels, rel_binarys, roi_features, union_features, logger=None):
        obj_dists, obj_preds, edge_ctx, _ = self.context_layer(roi_features, proposals, logger)
        prod, pair_pred = self.pair_reps(edge_ctx, obj_preds, proposals, rel_pair_idxs)
        rel_dists = self.rel_compress(self.post_cat(prod) * union_features)
        rel_dists = rel_dists + self.freq_bias.index_with_labels(pair_pred)
        num_objs = [len(p) for p in proposals]
        return obj_dists.split(num_objs), rel_dists.split([len(r) for r in rel_pair_idxs]), {}


def generate_forest(scores):
    """Module-level builder, looked up by VCTree's context at call time like the host's."""
    return [("tree", float(scores.sum()))]


class VCTreeLSTMContext(LSTMContext):
    def obj_ctx(self, obj_feats, labels):
        # VCTree's obj_ctx returns (obj_ctxs, obj_preds, obj_dists): the features come first.
        _, preds, encoded = super().obj_ctx(obj_feats, labels)
        return encoded, preds, None

    def forward(self, x, proposals, logger=None):
        self.last_forest = generate_forest(x.detach())
        return super().forward(x, proposals, logger)


class VCTreePredictor(MotifPredictor):
    context_class = VCTreeLSTMContext

    def __init__(self, config, in_channels, dropout=0.0):
        super().__init__(config, in_channels, dropout)
        self.ctx_compress = self.rel_compress  # VCTree names its classifier ctx_compress
        del self.rel_compress

    def forward(self, proposals, rel_pair_idxs, rel_labels, rel_binarys, roi_features, union_features, logger=None):
        obj_dists, obj_preds, edge_ctx, _ = self.context_layer(roi_features, proposals, logger)
        prod, pair_pred = self.pair_reps(edge_ctx, obj_preds, proposals, rel_pair_idxs)
        rel_dists = self.ctx_compress(self.post_cat(prod) * union_features)
        rel_dists = rel_dists + self.freq_bias.index_with_labels(pair_pred)
        num_objs = [len(p) for p in proposals]
        return obj_dists.split(num_objs), rel_dists.split([len(r) for r in rel_pair_idxs]), {}


class TransformerContext(nn.Module):
    def __init__(self, dropout=0.1):
        super().__init__()
        self.lin_obj = nn.Linear(IN_CHANNELS, HIDDEN)
        self.context_obj = nn.Sequential(nn.Linear(HIDDEN, HIDDEN), nn.Dropout(dropout))
        self.context_edge = nn.Sequential(nn.Linear(HIDDEN, HIDDEN), nn.Dropout(dropout))

    def forward(self, roi_features, proposals, logger=None):
        labels = torch.cat([p.get_field("labels") for p in proposals])
        obj_feats = self.context_obj(self.lin_obj(roi_features))
        edge_ctx = self.context_edge(obj_feats)
        return nn.functional.one_hot(labels, NUM_OBJ_CLASSES).float(), labels, edge_ctx


class TransformerPredictor(MotifPredictor):
    def __init__(self, config, in_channels):
        super().__init__(config, in_channels)
        self.context_layer = TransformerContext()
        self.ctx_compress = nn.Linear(2 * HIDDEN, NUM_REL_CLASSES)

    def forward(self, proposals, rel_pair_idxs, rel_labels, rel_binarys, roi_features, union_features, logger=None):
        obj_dists, obj_preds, edge_ctx = self.context_layer(roi_features, proposals, logger)
        prod, pair_pred = self.pair_reps(edge_ctx, obj_preds, proposals, rel_pair_idxs)
        rel_dists = self.rel_compress(self.post_cat(prod) * union_features) + self.ctx_compress(prod)
        rel_dists = rel_dists + self.freq_bias.index_with_labels(pair_pred)
        num_objs = [len(p) for p in proposals]
        return obj_dists.split(num_objs), rel_dists.split([len(r) for r in rel_pair_idxs]), {}


IMP_HIDDEN = 11  # IMP's state width is its own, not CONTEXT_HIDDEN_DIM (as in the host)


class IMPContext(nn.Module):
    def __init__(self):
        super().__init__()
        self.obj_unary = nn.Linear(IN_CHANNELS, IMP_HIDDEN)
        self.edge_unary = nn.Linear(POOLING, IMP_HIDDEN)
        self.node_gru = nn.GRUCell(IMP_HIDDEN, IMP_HIDDEN)
        self.edge_gru = nn.GRUCell(IMP_HIDDEN, IMP_HIDDEN)
        self.rel_fc = nn.Linear(IMP_HIDDEN, NUM_REL_CLASSES)

    def forward(self, x, proposals, union_features, rel_pair_idxs, logger=None):
        obj_rep, rel_rep = self.obj_unary(x), self.edge_unary(union_features)
        nodes, edges = self.node_gru(obj_rep), self.edge_gru(rel_rep)
        offsets = torch.tensor([0] + [len(p) for p in proposals[:-1]]).cumsum(0)
        subj = torch.cat([p[:, 0] + o for p, o in zip(rel_pair_idxs, offsets)])
        for _ in range(2):
            edges = self.edge_gru(nodes[subj], edges)
            nodes = self.node_gru(torch.zeros_like(nodes).index_add(0, subj, edges), nodes)
        labels = torch.cat([p.get_field("labels") for p in proposals])
        return nn.functional.one_hot(labels, NUM_OBJ_CLASSES).float(), self.rel_fc(edges)


class IMPPredictor(nn.Module):
    def __init__(self, config, in_channels):
        super().__init__()
        self.context_layer = IMPContext()

    def forward(self, proposals, rel_pair_idxs, rel_labels, rel_binarys, roi_features, union_features, logger=None):
        obj_dists, rel_dists = self.context_layer(roi_features, proposals, union_features, rel_pair_idxs, logger)
        num_objs = [len(p) for p in proposals]
        return obj_dists.split(num_objs), rel_dists.split([len(r) for r in rel_pair_idxs]), {}


def make_batch(seed=0, num_objs=(4, 3)):
    """Proposals, sampled pairs with labels (foreground and background), features: a training step."""
    g = torch.Generator().manual_seed(seed)
    proposals, pairs, labels = [], [], []
    for n in num_objs:
        proposals.append(FakeBoxList(torch.randint(1, NUM_OBJ_CLASSES, (n,), generator=g)))
        idx = torch.tensor([(i, j) for i in range(n) for j in range(n) if i != j])
        pairs.append(idx)
        rel = torch.randint(1, NUM_REL_CLASSES, (len(idx),), generator=g)
        rel[len(idx) // 2:] = 0  # background pairs
        labels.append(rel)
    num_rels = sum(len(p) for p in pairs)
    roi = torch.randn(sum(num_objs), IN_CHANNELS, generator=g, requires_grad=True)
    union = torch.randn(num_rels, POOLING, generator=g, requires_grad=True)
    return proposals, pairs, labels, [l.clone() for l in labels], roi, union
