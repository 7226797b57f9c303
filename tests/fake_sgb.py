"""Small stand-ins for SGB's relation predictors, for host-free tests of the adapter.

They follow the host's real signatures and module names (``context_layer``, ``edge_ctx_rnn`` fed a
PackedSequence, ``post_emb``, ``rel_compress``, ``freq_bias.obj_baseline``, a BatchNorm inside the
context, VCTree's module-level forest builder, IMP's GRU cell called once per iteration), written
small and in our own words; the numbers they compute are not the host's, only the plumbing is.
"""

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import PackedSequence
from yacs.config import CfgNode

from sgg_plugins.config import add_sgg_plugins_config
from sgg_plugins.text.bank import TextEmbeddingBank
from sgg_plugins.text.glove import WordVectorPhrases

NUM_OBJ_CLASSES = 6
NUM_REL_CLASSES = 5
IN_CHANNELS = 12
HIDDEN = 8
POOLING = 10
OBJ_NAMES = [f"o{i}" for i in range(NUM_OBJ_CLASSES)]
PRED_NAMES = [f"r{i}" for i in range(NUM_REL_CLASSES)]


class FakeBoxList:
    def __init__(self, labels, bbox=None, size=(100, 80)):
        self.fields = {"labels": labels}
        self.bbox, self.size = bbox, size  # xyxy boxes and (width, height), as SGB's BoxList

    def get_field(self, name):
        return self.fields[name]

    def __len__(self):
        return len(self.fields["labels"])

    def __getitem__(self, item):
        """Boxes and every field sliced, same image size (MODEL.MRC's one-object images slice so)."""
        sliced = FakeBoxList(self.fields["labels"][item], None if self.bbox is None else self.bbox[item], self.size)
        sliced.fields = {name: value[item] for name, value in self.fields.items()}
        return sliced


def make_cfg(predictor="MotifPredictor", **plugin_opts):
    cfg = CfgNode()
    cfg.MODEL = CfgNode()
    cfg.MODEL.ROI_RELATION_HEAD = CfgNode()
    cfg.MODEL.ROI_RELATION_HEAD.PREDICTOR = predictor
    cfg.MODEL.ROI_RELATION_HEAD.CONTEXT_HIDDEN_DIM = HIDDEN
    cfg.MODEL.ROI_RELATION_HEAD.EMBED_DIM = 200  # the host's default GloVe width
    cfg.GLOVE_DIR = "."  # the host's default
    cfg.MODEL.ROI_BOX_HEAD = CfgNode()
    cfg.MODEL.ROI_BOX_HEAD.MLP_HEAD_DIM = POOLING  # the union feature's width
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
    """Motifs' context: obj_ctx(...) -> 6-tuple with the encoder features at index 2, then
    edge_ctx(obj_rel_rep, perm, inv_perm, ls_transposed) on cat(obj_embed2(preds), x, obj_ctx)."""

    def __init__(self, dropout=0.0):
        super().__init__()
        self.pos_embed = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
        self.obj_ctx_rnn = nn.LSTM(IN_CHANNELS + 4, HIDDEN, bidirectional=True)
        self.lin_obj_h = nn.Linear(2 * HIDDEN, HIDDEN)
        self.obj_embed2 = nn.Embedding(NUM_OBJ_CLASSES, 4)
        self.edge_ctx_rnn = nn.LSTM(4 + IN_CHANNELS + HIDDEN, HIDDEN, num_layers=2, dropout=dropout,
                                    bidirectional=True)
        self.lin_edge_h = nn.Linear(2 * HIDDEN, HIDDEN)

    def obj_ctx(self, obj_feats, proposals, obj_labels=None):
        perm = torch.arange(obj_feats.shape[0])
        encoded = self.lin_obj_h(self.obj_ctx_rnn(_packed(obj_feats[perm]))[0].data)
        dists = nn.functional.one_hot(obj_labels, NUM_OBJ_CLASSES).float()
        return dists, obj_labels, encoded[perm], perm, perm, None

    def edge_ctx(self, inp_feats, perm, inv_perm, ls_transposed):
        return self.lin_edge_h(self.edge_ctx_rnn(_packed(inp_feats[perm]))[0].data)[inv_perm]

    def object_inputs(self, x, proposals):
        labels = torch.cat([p.get_field("labels") for p in proposals])
        boxes = torch.stack([labels.float(), labels.float() * 2, torch.ones_like(labels.float()),
                             torch.arange(len(labels)).float()], 1)
        return labels, torch.cat([x, self.pos_embed(boxes)], 1)

    def forward(self, x, proposals, logger=None):
        labels, obj_pre_rep = self.object_inputs(x, proposals)
        obj_dists, obj_preds, obj_ctx, perm, inv_perm, ls = self.obj_ctx(obj_pre_rep, proposals, labels)
        edge_in = torch.cat([self.obj_embed2(obj_preds), x, obj_ctx], 1)
        edge_ctx = self.edge_ctx(edge_in, perm, inv_perm, ls)
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


class TreeLSTM(nn.Module):
    """Called as rnn(forest, features, num_obj) like the host's tree-LSTMs; holds its projection."""

    def __init__(self, in_dim):
        super().__init__()
        self.rnn = nn.LSTM(in_dim, HIDDEN, bidirectional=True)
        self.out = nn.Linear(2 * HIDDEN, HIDDEN)

    def forward(self, forest, features, num_obj):
        return self.out(self.rnn(_packed(features))[0].data)


class VCTreeLSTMContext(LSTMContext):
    """VCTree's context: a forest from the module-level builder, obj_ctx returning
    (obj_ctxs, obj_preds, obj_dists), then edge_ctx(num_objs, obj_rel_rep, forest) on the edge
    tree-LSTM (no separate output projection, as in the host)."""

    def __init__(self, dropout=0.0):
        super().__init__(dropout)
        self.edge_ctx_rnn = TreeLSTM(4 + IN_CHANNELS + HIDDEN)
        del self.lin_edge_h

    def obj_ctx(self, obj_feats, proposals, obj_labels=None, vc_forest=None):
        dists, preds, encoded, *_ = super().obj_ctx(obj_feats, proposals, obj_labels)
        return encoded, preds, dists

    def edge_ctx(self, num_objs, obj_feats, forest):
        assert forest is not None
        return self.edge_ctx_rnn(forest, obj_feats, sum(num_objs))

    def forward(self, x, proposals, rel_pair_idxs=None, logger=None):
        labels, obj_pre_rep = self.object_inputs(x, proposals)
        forest = generate_forest(x.detach())
        obj_ctxs, obj_preds, obj_dists = self.obj_ctx(obj_pre_rep, proposals, labels, forest)
        edge_in = torch.cat([self.obj_embed2(obj_preds), x, obj_ctxs], 1)
        edge_ctx = self.edge_ctx([len(p) for p in proposals], edge_in, forest)
        return obj_dists, obj_preds, edge_ctx, None


class VCTreePredictor(MotifPredictor):
    context_class = VCTreeLSTMContext

    def __init__(self, config, in_channels, dropout=0.0):
        super().__init__(config, in_channels, dropout)
        self.ctx_compress = self.rel_compress  # VCTree names its classifier ctx_compress
        del self.rel_compress

    def forward(self, proposals, rel_pair_idxs, rel_labels, rel_binarys, roi_features, union_features, logger=None):
        obj_dists, obj_preds, edge_ctx, _ = self.context_layer(roi_features, proposals, rel_pair_idxs, logger)
        prod, pair_pred = self.pair_reps(edge_ctx, obj_preds, proposals, rel_pair_idxs)
        rel_dists = self.ctx_compress(self.post_cat(prod) * union_features)
        rel_dists = rel_dists + self.freq_bias.index_with_labels(pair_pred)
        num_objs = [len(p) for p in proposals]
        return obj_dists.split(num_objs), rel_dists.split([len(r) for r in rel_pair_idxs]), {}


class Encoder(nn.Module):
    """Called as encoder(features, num_objs), like the host's TransformerEncoder."""

    def __init__(self, dropout):
        super().__init__()
        self.layer = nn.Sequential(nn.Linear(HIDDEN, HIDDEN), nn.Dropout(dropout))

    def forward(self, features, num_objs):
        assert sum(num_objs) == features.shape[0]
        return self.layer(features)


class TransformerContext(nn.Module):
    """Object encoder, then lin_edge(cat(roi, obj_feats, obj_embed2)) and the edge encoder."""

    def __init__(self, dropout=0.1):
        super().__init__()
        self.lin_obj = nn.Linear(IN_CHANNELS, HIDDEN)
        self.context_obj = Encoder(dropout)
        self.obj_embed2 = nn.Embedding(NUM_OBJ_CLASSES, 4)
        self.lin_edge = nn.Linear(IN_CHANNELS + HIDDEN + 4, HIDDEN)
        self.context_edge = Encoder(dropout)

    def forward(self, roi_features, proposals, logger=None):
        labels = torch.cat([p.get_field("labels") for p in proposals])
        num_objs = [len(p) for p in proposals]
        obj_feats = self.context_obj(self.lin_obj(roi_features), num_objs)
        edge_pre_rep = torch.cat([roi_features, obj_feats, self.obj_embed2(labels)], 1)
        edge_ctx = self.context_edge(self.lin_edge(edge_pre_rep), num_objs)
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
        corner = torch.rand(n, 2, generator=g) * 50
        boxes = torch.cat([corner, corner + 10 + torch.rand(n, 2, generator=g) * 20], 1)
        proposals.append(FakeBoxList(torch.randint(1, NUM_OBJ_CLASSES, (n,), generator=g), boxes))
        idx = torch.tensor([(i, j) for i in range(n) for j in range(n) if i != j])
        pairs.append(idx)
        rel = torch.randint(1, NUM_REL_CLASSES, (len(idx),), generator=g)
        rel[len(idx) // 2:] = 0  # background pairs
        labels.append(rel)
    num_rels = sum(len(p) for p in pairs)
    roi = torch.randn(sum(num_objs), IN_CHANNELS, generator=g, requires_grad=True)
    union = torch.randn(num_rels, POOLING, generator=g, requires_grad=True)
    return proposals, pairs, labels, [l.clone() for l in labels], roi, union


class FakeText:
    """Stand-ins for RCL's text sources over the fake classes (every triplet they allow), random
    CLIP tables drawn in build order from one seeded generator, and word vectors: no CLIP, no dataset."""

    def __init__(self, seed=0, dim=8):
        self.grid = torch.cartesian_prod(torch.arange(1, NUM_OBJ_CLASSES), torch.arange(1, NUM_REL_CLASSES),
                                         torch.arange(1, NUM_OBJ_CLASSES))
        self.gen = torch.Generator().manual_seed(seed)
        self.dim = dim

    def unit(self, *shape):
        return F.normalize(torch.randn(*shape, self.dim, generator=self.gen), dim=-1)

    def sources(self, config):
        """``rcl.training_text_sources`` (and CLIPMATCH's ``candidate_sources``)."""
        return OBJ_NAMES, PRED_NAMES, self.grid

    def bank(self, obj_classes, pred_classes, triplets, **kwargs):
        """``rcl.load_or_compute_bank``."""
        o, p = len(obj_classes), len(pred_classes)
        unit = self.unit
        return TextEmbeddingBank(unit(o), unit(p), unit(o, p), unit(p, o), triplets, unit(len(triplets)))

    @staticmethod
    def glove_phrases(obj, pred, glove_dir, dim):
        """``rcl.glove_phrases``: stand-in word vectors."""
        return WordVectorPhrases.from_classes(obj, pred, {}, dim)
