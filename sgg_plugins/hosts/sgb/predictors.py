"""SGB relation predictors with the regularizers attached.

``regularized_predictor_class(Base)`` returns a subclass of the host's own predictor class. It adds
no parameter to the host's names: the plug-in's modules live under ``sgg_plugins.`` so a checkpoint
trained with a regularizer evaluates in the vanilla host (extra keys are ignored by its loader) and
a vanilla checkpoint fine-tunes here (the plug-in keys keep their initialisation).

In eval mode ``forward`` is the host's, untouched: no hook is registered, nothing extra runs.
In training one step is:

1. the clean pass: the host's forward, with taps recording the tensors the regularizers read;
2. ALIGN: the mirrored pass (same modules and weights, inputs masked, last layer untied, no
   frequency prior, no dropout, running statistics frozen) and its KL to the clean distribution, or
   to a no-grad no-dropout pass where the predictor has dropout (METHODS.md §1);
3. RCL: relation and object features of the clean pass against cached CLIP text embeddings;
4. PROBE: per-object context features of the clean pass and of a masked second view.

Each adds one weighted entry to the host's loss dict.
"""

import contextlib
import sys

import torch
from torch import nn

from ...regularizers.align import (
    alignment_kl,
    build_alignment_head,
    dropout_disabled,
    dropout_sites,
    dropout_used,
    frozen_running_stats,
    mask_elements,
    supervised_alignment_loss,
)
from ..hooks import Tap, capture, has_path, map_floating, patched_attribute, replace_outputs, resolve, transform_inputs
from .specs import SPECS


def _detach(value):
    return map_floating(lambda t: t.detach(), value)


def _offsets(counts, device):
    counts = torch.as_tensor(counts, device=device)
    return torch.cumsum(counts, 0) - counts


class RegularizedPredictorMixin:
    """Mixed in front of a host predictor class; see the module docstring."""

    spec = None  # set by regularized_predictor_class

    def __init__(self, config, in_channels):
        super().__init__(config, in_channels)
        self.align_cfg = config.MODEL.ALIGN
        self.rcl_cfg = config.MODEL.RCL
        self.probe_cfg = config.MODEL.PROBE
        self.sgg_plugins = nn.ModuleDict()
        if self.align_cfg.ENABLED:
            self._build_align()
        if self.rcl_cfg.ENABLED:
            self._build_rcl(config)
        if self.probe_cfg.ENABLED:
            self._build_probe(config)
        # Once the host's modules exist: where dropout may happen. If any of it runs in the clean
        # pass, that pass cannot serve as the alignment target: a no-dropout pass is made (§4.1).
        self._dropout_sites = dropout_sites(self)

    # ----------------------------------------------------------------------------- construction
    def _build_align(self):
        self._align_masked = next(p for p in self.spec.align_masked if has_path(self, p))
        heads = nn.ModuleDict()
        if self.align_cfg.HEAD != "tied":
            for path in self.spec.classifiers:
                heads[path.replace(".", "_")] = build_alignment_head(self.align_cfg.HEAD, resolve(self, path))
        self.sgg_plugins["align_heads"] = heads

    def _object_dim(self):
        path, _, attribute = self.spec.object_dim.rpartition(".")
        return getattr(resolve(self, path), attribute)

    def _dataset_statistics(self, config):
        from maskrcnn_benchmark.data import get_dataset_statistics

        return get_dataset_statistics(config)  # cached by the host in OUTPUT_DIR

    def _build_rcl(self, config):
        from ...regularizers.rcl import RelationalContrastiveLoss
        from ...text.clip_text import load_or_compute_bank

        cfg = self.rcl_cfg
        stats = self._dataset_statistics(config)
        # fg_matrix[s, o, p] counts the training split's triplets: every one the loss can meet.
        subj, obj, pred = torch.nonzero(torch.as_tensor(stats["fg_matrix"])[:, :, 1:] > 0, as_tuple=True)
        triplets = torch.stack([subj, pred + 1, obj], 1)
        # Computed (or loaded) here, once, when the model is built: CLIP never runs in a step.
        self.text_bank = load_or_compute_bank(
            stats["obj_classes"], stats["rel_classes"], triplets, model=cfg.CLIP_MODEL,
            pretrained=cfg.CLIP_PRETRAINED, prompt=cfg.PROMPT, object_prompt=cfg.OBJECT_PROMPT,
            cache_path=cfg.TEXT_EMBEDDINGS or None)
        self.sgg_plugins["rcl"] = RelationalContrastiveLoss.from_config(
            cfg, rel_dim=resolve(self, self.spec.relation_feature).in_features,
            obj_dim=self._object_dim(), text_dim=self.text_bank.dim)

    def _build_probe(self, config):
        from ...regularizers.probe import RelationshipProbeLoss

        self.sgg_plugins["probe"] = RelationshipProbeLoss(
            dim=self._object_dim(),
            rank=self.probe_cfg.RANK,
            max_distance=self.probe_cfg.MAX_DISTANCE,
            temperature=self.probe_cfg.TEMPERATURE,
        )

    # ----------------------------------------------------------------------------- forward
    def forward(self, proposals, rel_pair_idxs, rel_labels, rel_binarys, roi_features, union_features, logger=None):
        if not self.training or not len(self.sgg_plugins):
            return super().forward(proposals, rel_pair_idxs, rel_labels, rel_binarys, roi_features,
                                   union_features, logger)
        host_args = (proposals, rel_pair_idxs, rel_labels, rel_binarys)
        with self._forest_recorder() as forests, capture(self, self._clean_taps()) as clean, \
                dropout_used(self._dropout_sites) as dropped:
            obj_dists, rel_dists, add_losses = super().forward(*host_args, roi_features, union_features, logger)
        step = dict(host_args=host_args, roi=roi_features, union=union_features, logger=logger,
                    forests=forests, clean=clean, rel_logits=torch.cat(rel_dists, 0), dropped=bool(dropped))
        probe_view = None
        if self.align_cfg.ENABLED:
            loss, probe_view = self._alignment_loss(step)
            add_losses["loss_align"] = self.align_cfg.WEIGHT * loss
        if self.rcl_cfg.ENABLED:
            add_losses["loss_rcl"] = self.rcl_cfg.WEIGHT * self._rcl_loss(step)
        if self.probe_cfg.ENABLED:
            add_losses.update(self._probe_losses(step, probe_view))
        return obj_dists, rel_dists, add_losses

    def _clean_taps(self):
        taps = {}
        if self.rcl_cfg.ENABLED:
            taps["rcl_relation"] = Tap(self.spec.relation_feature, "input")
            taps["rcl_objects"] = self.spec.object_feature
        if self.probe_cfg.ENABLED:
            taps["probe"] = self.spec.probe_features[self.probe_cfg.FEATURE]
            taps["context_call"] = Tap("context_layer", "call")
        return taps

    @contextlib.contextmanager
    def _forest_recorder(self, replay=None):
        """Record VCTree's forests in the clean pass, or replay them in an extra pass.

        The forest comes from a greedy Python loop over pair scores; rebuilding it for the mirrored
        pass would be slow and, were the scores different, would change the structure the mirror
        is supposed to share with the original (METHODS.md §1, VCTree).
        """
        module = sys.modules[type(self.context_layer).__module__]
        name = self.spec.forest_builder
        if name is None or not hasattr(module, name):
            yield []
            return
        forests = [] if replay is None else list(replay)
        if replay is None:
            build = getattr(module, name)

            def builder(*args, **kwargs):
                forests.append(build(*args, **kwargs))
                return forests[-1]
        else:
            def builder(*args, **kwargs):
                return forests.pop(0)
        with patched_attribute(module, name, builder):
            yield forests

    @contextlib.contextmanager
    def _extra_pass(self, step):
        """What every extra pass shares: frozen running statistics, no dropout, the clean forest."""
        with frozen_running_stats(self), dropout_disabled(self), self._forest_recorder(step["forests"]):
            yield

    # ----------------------------------------------------------------------------- ALIGN
    def _alignment_loss(self, step):
        cfg = self.align_cfg
        mirror_logits, view = self._mirror_pass(step)
        if cfg.LOSS == "supervised":
            return supervised_alignment_loss(mirror_logits, torch.cat(step["host_args"][2], 0)), view
        if step["dropped"]:
            with torch.no_grad(), self._extra_pass(step):
                _, target, _ = super().forward(*step["host_args"], step["roi"], step["union"], step["logger"])
            target = torch.cat(target, 0)
        else:
            target = step["rel_logits"]
        return alignment_kl(mirror_logits, target, direction=cfg.KL_DIRECTION), view

    def _mirror_pass(self, step):
        cfg = self.align_cfg
        roi, union = step["roi"], step["union"]
        if cfg.DETACH_INPUT:
            roi, union = roi.detach(), _detach(union)

        def mask(t):
            return mask_elements(t, cfg.MASK_PROB)

        if self.spec.mask_union_arg:
            union = map_floating(mask, union)
        replacements = {}
        for path in self.spec.classifiers if cfg.HEAD != "tied" else ():
            head = self.sgg_plugins["align_heads"][path.replace(".", "_")]
            replacements[path] = lambda x, out, _head=head: _head(x)
        if not cfg.USE_FREQ_BIAS and self.spec.freq_bias and has_path(self, self.spec.freq_bias):
            replacements[self.spec.freq_bias] = lambda x, out: torch.zeros_like(out)
        taps = {}
        if self.probe_cfg.ENABLED and self.probe_cfg.FEATURE in self.spec.align_view_features:
            taps["probe"] = self.spec.probe_features[self.probe_cfg.FEATURE]
        with self._extra_pass(step), transform_inputs(self, [self._align_masked], mask), \
                replace_outputs(self, replacements), capture(self, taps) as found:
            _, rel_dists, _ = super().forward(*step["host_args"], roi, union, step["logger"])
        return torch.cat(rel_dists, 0), found.get("probe")

    # ----------------------------------------------------------------------------- RCL
    def _rcl_loss(self, step):
        proposals, rel_pair_idxs, rel_labels, _ = step["host_args"]
        clean = step["clean"]
        subj, obj = _global_pairs(proposals, rel_pair_idxs)
        objects = clean["rcl_objects"]
        if self.spec.object_layout == "halves":
            half = objects.shape[1] // 2
            subj_feats, obj_feats = objects[subj, :half], objects[obj, half:]
        else:
            subj_feats, obj_feats = objects[subj], objects[obj]
        labels = torch.cat([p.get_field("labels") for p in proposals], 0).long()
        relation = clean["rcl_relation"]
        self.text_bank.to(relation.device)  # in place; a no-op once it is there
        return self.sgg_plugins["rcl"](relation, subj_feats, obj_feats, labels[subj],
                                       torch.cat(rel_labels, 0).long(), labels[obj], self.text_bank)

    # ----------------------------------------------------------------------------- PROBE
    def _probe_losses(self, step, align_view):
        cfg = self.probe_cfg
        proposals, rel_pair_idxs, rel_labels, _ = step["host_args"]
        features = step["clean"]["probe"]
        view = None
        if cfg.CONTRAST_WEIGHT > 0:
            view = align_view if align_view is not None else self._probe_view(step)
        graph_pairs = [pairs[labels > 0] for pairs, labels in zip(rel_pair_idxs, rel_labels)]
        losses = self.sgg_plugins["probe"](features, [len(p) for p in proposals], graph_pairs, view)
        out = {"loss_probe": cfg.WEIGHT * losses["loss_probe"]}
        if view is not None:
            out["loss_probe_contrast"] = cfg.CONTRAST_WEIGHT * losses["loss_probe_contrast"]
        return out

    def _probe_view(self, step):
        """The probe's second view: the context re-run on masked (detached) input features."""
        args, kwargs = step["clean"]["context_call"]
        p = self.probe_cfg.MASK_PROB
        args = map_floating(lambda t: mask_elements(t.detach(), p), args)
        tap = {"probe": self.spec.probe_features[self.probe_cfg.FEATURE]}
        with self._extra_pass(step), capture(self, tap) as found:
            self.context_layer(*args, **kwargs)
        return found["probe"]


def _global_pairs(proposals, rel_pair_idxs):
    """Subject and object rows of every sampled pair in the batch's concatenated object tensor."""
    device = rel_pair_idxs[0].device
    offsets = _offsets([len(p) for p in proposals], device)
    pairs = torch.cat([pairs.long() + off for pairs, off in zip(rel_pair_idxs, offsets)], 0)
    return pairs[:, 0], pairs[:, 1]


def regularized_predictor_class(base):
    """The host predictor class ``base`` with the regularizers attached (cached per class)."""
    cached = _CLASSES.get(base)
    if cached is None:
        spec = SPECS[base.__name__]
        cached = type(f"Regularized{base.__name__}", (RegularizedPredictorMixin, base), {"spec": spec})
        _CLASSES[base] = cached
    return cached


_CLASSES = {}
