"""MODEL.RCL on SGB predictors: relation and object features against CLIP text (seed 001 §3.2-3.3).

The visual side is the input of the host's relation classifier (the relation representation) and
the per-object representations of the pair, read from the clean pass; the text side is a bank of
frozen CLIP text embeddings computed once when the model is built (CLIP never runs in a step).
"""

import torch

from ....regularizers.rcl import RelationalContrastiveLoss
from ....text.clip_text import load_or_compute_bank
from ...hooks import Tap, resolve
from .base import SGBObjective, require


def dataset_statistics(config):
    from maskrcnn_benchmark.data import get_dataset_statistics

    return get_dataset_statistics(config)  # cached by the host in OUTPUT_DIR


class RclObjective(SGBObjective):
    node = "RCL"

    def __init__(self, predictor, config):
        super().__init__()
        self.cfg = cfg = config.MODEL.RCL
        spec = predictor.spec
        require(predictor, (spec.relation_feature, spec.object_feature.path, spec.object_dim.rpartition(".")[0]),
                self.node)
        stats = dataset_statistics(config)
        # fg_matrix[s, o, p] counts the training split's triplets.
        subj, obj, pred = torch.nonzero(torch.as_tensor(stats["fg_matrix"])[:, :, 1:] > 0, as_tuple=True)
        triplets = torch.stack([subj, pred + 1, obj], 1)
        self.text_bank = load_or_compute_bank(
            stats["obj_classes"], stats["rel_classes"], triplets, model=cfg.CLIP_MODEL,
            pretrained=cfg.CLIP_PRETRAINED, prompt=cfg.PROMPT, object_prompt=cfg.OBJECT_PROMPT,
            cache_path=cfg.TEXT_EMBEDDINGS or None)
        object_dim_path, _, attribute = spec.object_dim.rpartition(".")
        self.loss = RelationalContrastiveLoss.from_config(
            cfg, rel_dim=resolve(predictor, spec.relation_feature).in_features,
            obj_dim=getattr(resolve(predictor, object_dim_path), attribute), text_dim=self.text_bank.dim)

    def taps(self, predictor):
        spec = predictor.spec
        return {"rcl_relation": Tap(spec.relation_feature, "input"), "rcl_objects": spec.object_feature}

    def losses(self, step):
        subj, obj = step.pair_rows
        objects = step.clean["rcl_objects"]
        if step.spec.object_layout == "halves":
            half = objects.shape[1] // 2
            subj_feats, obj_feats = objects[subj, :half], objects[obj, half:]
        else:
            subj_feats, obj_feats = objects[subj], objects[obj]
        labels = step.obj_labels
        relation = step.clean["rcl_relation"]
        self.text_bank.to(relation.device)  # in place; a no-op once it is there
        loss = self.loss(relation, subj_feats, obj_feats, labels[subj], step.rel_labels_cat, labels[obj],
                         self.text_bank)
        return {"loss_rcl": self.cfg.WEIGHT * loss}
