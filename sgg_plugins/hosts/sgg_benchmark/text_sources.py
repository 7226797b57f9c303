"""What RCL's and CLIPMATCH's text banks are built from on SGG-Benchmark: the class and predicate
names and every (subject, predicate, object) triplet of the training split, as its dataset files
hold them.

The host reads a COCO-style file per split (``RelationDataset``, ``sgg_benchmark/data/datasets/
data.py``), which ``get_dataset_info`` names for each of ``datasets.train``. Labels are numbered as
that class numbers them, so that the banks' rows line up with the labels the predictor sees:
``__background__`` is 0 and the categories (resp. ``rel_categories``) follow in the order of their
ids. Every ``rel_annotations`` entry counts, overlapping boxes or not, as on SGB (the host's
frequency statistics are not the source: they only count what its sampler keeps).
"""

import json

import torch

from ...config import ConfigError


def _names_by_label(categories):
    """``['__background__', name of the smallest id, ...]`` and ``{id: label}``, as the host numbers them."""
    ids = {}
    for index, category in enumerate(categories):
        if isinstance(category, dict):
            ids[category.get("id", index + 1)] = category.get("name", str(category))
        else:  # the host accepts bare names for rel_categories, numbered from 1
            ids[index + 1] = str(category)
    ids[0] = "__background__"
    order = sorted(ids)
    return [ids[i] for i in order], {i: label for label, i in enumerate(order)}


def read_coco_scene_graphs(annotation_file):
    """(obj_classes, pred_classes, [T, 3] triplets) of one of the host's COCO-JSON split files."""
    with open(annotation_file) as f:
        coco = json.load(f)
    obj_classes, obj_label = _names_by_label(coco.get("categories", []))
    pred_classes, pred_label = _names_by_label(coco.get("rel_categories", []))
    box_label = {ann["id"]: obj_label[ann["category_id"]] for ann in coco.get("annotations", [])}
    triplets = [(box_label[rel["subject_id"]], pred_label[rel["predicate_id"]], box_label[rel["object_id"]])
                for rel in coco.get("rel_annotations", [])
                if rel["subject_id"] in box_label and rel["object_id"] in box_label and rel["predicate_id"] in pred_label]
    return obj_classes, pred_classes, torch.tensor(triplets, dtype=torch.long).reshape(-1, 3)


def training_text_sources(config, node):
    """(obj_classes, pred_classes, [T, 3] triplets) of every dataset of ``datasets.train``; one line
    (:class:`ConfigError`, naming the objective ``node``, e.g. "RCL") where they cannot be read."""
    from sgg_benchmark.data.build import get_dataset_info

    key = f"MODEL.{node}"  # the launcher writes yacs-spelled keys in the host's lowercase
    raw = getattr(config, "_cfg", config)  # the host's Config wrapper holds the DictConfig
    names = list(raw.datasets.train)
    if not names:
        raise ConfigError(f"{key} reads its triplets from the training dataset, but datasets.train is empty")
    sources = []
    for name in names:
        info = get_dataset_info(name, raw)
        if info["factory"] != "RelationDataset":
            raise ConfigError(f"{key} reads its triplets from COCO-JSON datasets (datasets.type=coco); "
                              f"{name} is read by {info['factory']}")
        try:
            sources.append(read_coco_scene_graphs(info["args"]["annotation_file"]))
        except (OSError, KeyError, ValueError) as error:
            raise ConfigError(f"{key}: cannot read the triplets of {info['args']['annotation_file']}: "
                              f"{type(error).__name__}: {error}") from None
    obj_classes, pred_classes, _ = sources[0]
    if any(other[:2] != (obj_classes, pred_classes) for other in sources[1:]):
        raise ConfigError(f"{key}: the training datasets {', '.join(names)} list different classes")
    return obj_classes, pred_classes, torch.cat([triplets for _, _, triplets in sources])
