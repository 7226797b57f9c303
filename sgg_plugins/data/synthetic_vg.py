"""A small synthetic scene-graph dataset in the file layout of SGB's Visual Genome split.

``write_synthetic_vg(out_dir)`` writes what SGB's ``VGDataset`` reads:

* ``image_data.json``: one ``{image_id, width, height, ...}`` per image, in the h5's image order;
* ``VG-SGG-dicts-with-attri.json``: ``label_to_idx`` / ``predicate_to_idx`` / ``attribute_to_idx``
  (1-based, 0 is background and is added by the host), their inverses keyed by strings, and the
  ``object_count`` / ``predicate_count`` / ``attribute_count`` fields of the real file;
* ``VG-SGG-with-attri.h5``: per image ``split`` (0 train, 2 test) and inclusive
  ``img_to_first_box`` / ``img_to_last_box`` / ``img_to_first_rel`` / ``img_to_last_rel`` (-1 when
  an image has none); per box ``labels`` (N, 1), ``attributes`` (N, 10), ``boxes_1024`` (N, 4:
  centre x, centre y, width, height on a canvas whose longest side is 1024); per relation
  ``relationships`` (R, 2, global box rows) and ``predicates`` (R, 1). Dtypes are those of the real
  file (int32 for the index, split, box and relationship arrays, int64 for labels, attributes and
  predicates);
* ``VG_100K/<image_id>.jpg``: the rendered images;
* ``paths_catalog.py``: a ``DatasetCatalog`` serving ``VG_stanford_filtered_with_attribute_{train,
  val,test}`` (the names of SGB's stock config) from this folder, with this dataset's validation
  size, to pass as ``PATHS_CATALOG``;
* ``dataset.opts``: the config opts that depend on this dataset (``PATHS_CATALOG`` and the class
  counts), one ``KEY VALUE`` per line, to append to the host's command line;
* ``stats.json``: the object class and predicate counts of the train / val / test splits as the
  host splits them (most frequent first), the most / least frequent training predicate ratio and
  the settings the data was made with.
* with ``coco_layout`` (``--coco``): the same splits in Maelic/SGG-Benchmark's COCO-JSON layout,
  ``{train,val,test}/_annotations.coco.json`` beside their images (``coco_layout.py``), and
  ``sgg_benchmark.overrides``, the Hydra overrides (``datasets.name/type/data_dir``) that point
  that host at this folder.

Two presets (``--preset``): ``default``, 160 small scenes with 10 predicates for a run in minutes,
and ``bench``, 4,000 images with all 21 predicates, a training tail as steep as Visual Genome's
(most / least frequent about 80 at seed 0), rare near-synonyms ('beside', 'over', 'with') and a
scene type per image (home, park, street, shown by one marker object) that decides some predicates
between the same two classes in the same geometry ('holding' / 'carrying', 'watching' / 'playing
with' / 'walking', 'throwing'), so that object context matters.

Scenes are built from templates (an object on a support, a person wearing / holding things, two
objects side by side, one object above another, one object partly hiding another), so predicates
follow geometry and class roles and their frequencies are long-tailed, with near-synonyms
('on' / 'on top of', 'near' / 'next to') that a relation model can only tell apart by their
statistics. Each object class has its own shape, texture and colour, so an object detector or
classifier has something to learn too. Boxes are chosen on the 1024 canvas with even integer
widths and heights, so the host's conversion back to corners is exact, and drawn at
``box / 1024 * max(width, height)`` pixels, where the host puts them.

Everything is drawn from one ``numpy`` generator seeded by ``seed``: the same seed gives the same
bytes in every file.
"""

import json
import os
import sys
from collections import Counter

import numpy as np

from .synthetic_scenes import (  # noqa: F401  (BOX_SCALE, OBJECT_VOCABULARY: part of this module's interface)
    BOX_SCALE, COLOUR_NAMES, DEFAULT_PREDICATES, MIN_OBJECT_CLASSES, OBJECT_VOCABULARY, PREDICATE_PARENT,
    PREDICATE_VOCABULARY, SCENE_MARKERS, TEXTURES, build_bench_scene, build_scene, class_style, render)

MAX_ATTRIBUTES = 10  # width of the real file's attributes array
# SGB skips these file names for every dataset (corrupted Visual Genome images): never use them.
HOST_SKIPPED_IMAGE_IDS = frozenset({1592, 1722, 4616, 4617})
TRAIN_SPLIT, TEST_SPLIT = 0, 2
SGG_BENCHMARK_OVERRIDES = "sgg_benchmark.overrides"  # with coco_layout: Hydra overrides for SGG-Benchmark



def first_last_indices(counts):
    """Inclusive (first, last) row of each image's block of rows, -1 for both when it has none.

    The layout of img_to_first_box / img_to_last_box / img_to_first_rel / img_to_last_rel.
    """
    counts = np.asarray(counts, dtype=np.int64)
    ends = np.cumsum(counts)
    first = np.where(counts > 0, ends - counts, -1).astype(np.int32)
    last = np.where(counts > 0, ends - 1, -1).astype(np.int32)
    return first, last


def _resolve_predicate(name, kept):
    while name not in kept:
        name = PREDICATE_PARENT[name]
    return name


# Settings of each preset; an argument given explicitly overrides its preset's value.
PRESETS = {
    "default": {"num_images": 160, "num_object_classes": 15, "num_predicates": 10, "image_size": 320},
    # Thousands of images, every predicate of the vocabulary (21, most / least frequent >= 50),
    # scene context that decides some predicates. Counts: the stats.json written with the data.
    "bench": {"num_images": 4000, "num_object_classes": len(OBJECT_VOCABULARY),
              "num_predicates": len(PREDICATE_VOCABULARY), "image_size": 320},
}


def _check_arguments(preset, num_images, num_object_classes, num_predicates, image_size, test_fraction,
                     num_val_images):
    if preset not in PRESETS:
        raise ValueError(f"preset={preset!r}: choose one of {', '.join(PRESETS)}")
    if preset == "bench":
        chosen = {name for name, _ in OBJECT_VOCABULARY[:num_object_classes]}
        missing = [name for name in SCENE_MARKERS.values() if name not in chosen]
        if missing:
            raise ValueError(f"num_object_classes={num_object_classes}: the bench preset's scene markers "
                             f"({', '.join(missing)}) need at least 15 object classes")
    max_predicates = len(PREDICATE_VOCABULARY) if preset == "bench" else DEFAULT_PREDICATES
    if num_images < 3:
        raise ValueError(f"num_images={num_images}: need at least 3 (a train, a val and a test image)")
    if not MIN_OBJECT_CLASSES <= num_object_classes <= len(OBJECT_VOCABULARY):
        raise ValueError(
            f"num_object_classes={num_object_classes}: choose between {MIN_OBJECT_CLASSES} and "
            f"{len(OBJECT_VOCABULARY)} (the size of the synthetic object vocabulary)")
    if not 1 <= num_predicates <= max_predicates:
        raise ValueError(
            f"num_predicates={num_predicates}: choose between 1 and {max_predicates} (the predicates "
            f"the {preset} preset's scenes produce)")
    if not 64 <= image_size <= 2048:
        raise ValueError(f"image_size={image_size}: the longest image side must be between 64 and 2048 pixels")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction={test_fraction}: must be strictly between 0 and 1")
    num_test = int(round(num_images * test_fraction))
    num_trainval = num_images - num_test
    if num_test < 1 or num_trainval < 2:
        raise ValueError(
            f"num_images={num_images} with test_fraction={test_fraction} leaves {num_test} test and "
            f"{num_trainval} train+val images: need at least 1 and 2")
    if num_val_images is not None and not 1 <= num_val_images < num_trainval:
        raise ValueError(
            f"num_val_images={num_val_images}: must be at least 1 and less than the {num_trainval} "
            f"train+val images")


def write_synthetic_vg(out_dir, num_images=None, num_object_classes=None, num_predicates=None, seed=0,
                       image_size=None, test_fraction=0.25, num_val_images=None, overwrite=False, preset="default",
                       coco_layout=False):
    """Write a synthetic dataset in SGB's Visual Genome layout into ``out_dir``; return a summary dict.

    preset: ``default`` (160 small scenes, 10 predicates) or ``bench`` (4,000 images, 21 predicates
        with a steep tail, scene context that decides some predicates); the arguments below left
        at None take the preset's value (``PRESETS``).
    num_images: all images (train + val + test).
    num_object_classes / num_predicates: the first classes / predicates of the vocabularies above.
    image_size: the longest side in pixels; the other side is 80-100% of it, landscape or portrait.
    test_fraction: share of images with split 2 (test), chosen at random and interleaved.
    num_val_images: the validation images SGB carves out of the start of the training split
        (``num_val_im``); default 15% of train+val. It is written into ``paths_catalog.py``.
    overwrite: write into a non-empty ``out_dir`` (the dataset files are rewritten, others left alone).
    coco_layout: also write the same images, boxes, relations and splits in Maelic/SGG-Benchmark's
        COCO-JSON layout, ``out_dir/{train,val,test}/_annotations.coco.json`` (``coco_layout``), and
        ``sgg_benchmark.overrides``: the Hydra overrides that point that host at it.
    """
    settings = dict(PRESETS.get(preset, {}))
    for key, value in (("num_images", num_images), ("num_object_classes", num_object_classes),
                       ("num_predicates", num_predicates), ("image_size", image_size)):
        if value is not None:
            settings[key] = value
    if preset in PRESETS:
        num_images, num_object_classes = settings["num_images"], settings["num_object_classes"]
        num_predicates, image_size = settings["num_predicates"], settings["image_size"]
    _check_arguments(preset, num_images, num_object_classes, num_predicates, image_size, test_fraction, num_val_images)
    import h5py

    scene_builder = build_bench_scene if preset == "bench" else build_scene
    out_dir = os.path.abspath(out_dir)
    if os.path.isdir(out_dir) and os.listdir(out_dir) and not overwrite:
        raise FileExistsError(
            f"{out_dir} is not empty: choose a new folder or pass overwrite=True (--overwrite)")
    image_dir = os.path.join(out_dir, "VG_100K")
    os.makedirs(image_dir, exist_ok=True)

    rng = np.random.Generator(np.random.PCG64(seed))
    classes = [name for name, _ in OBJECT_VOCABULARY[:num_object_classes]]
    class_index = {name: i for i, (name, _) in enumerate(OBJECT_VOCABULARY)}
    roles = {}
    for name, role in OBJECT_VOCABULARY[:num_object_classes]:
        roles.setdefault(role, []).append(name)
    kept_predicates = PREDICATE_VOCABULARY[:num_predicates]
    attributes = sorted(COLOUR_NAMES + TEXTURES[1:])

    # Indices are 1-based in alphabetical order, as in the real dictionaries.
    label_to_idx = {name: i + 1 for i, name in enumerate(sorted(classes))}
    predicate_to_idx = {name: i + 1 for i, name in enumerate(sorted(kept_predicates))}
    attribute_to_idx = {name: i + 1 for i, name in enumerate(attributes)}

    num_test = int(round(num_images * test_fraction))
    split = np.full(num_images, TRAIN_SPLIT, dtype=np.int32)
    split[rng.choice(num_images, size=num_test, replace=False)] = TEST_SPLIT
    num_trainval = num_images - num_test
    num_val = num_val_images if num_val_images is not None else max(1, int(round(0.15 * num_trainval)))

    image_ids = [i for i in range(1, num_images + len(HOST_SKIPPED_IMAGE_IDS) + 1) if i not in HOST_SKIPPED_IMAGE_IDS][:num_images]
    image_data, labels, attribute_rows, boxes, relationships, predicates = [], [], [], [], [], []
    boxes_per_image, relations_per_image = [], []
    for image_id in image_ids:
        long_side, short_side = image_size, int(round(image_size * rng.uniform(0.8, 1.0)))
        width, height = (long_side, short_side) if rng.random() < 0.6 else (short_side, long_side)
        objects, relations = scene_builder(rng, width, height, roles)
        render(rng, width, height, objects, class_index).save(
            os.path.join(image_dir, f"{image_id}.jpg"), quality=90)

        first_row = len(labels)
        for name, (x1, y1, x2, y2), _ in objects:
            labels.append(label_to_idx[name])
            boxes.append(((x1 + x2) // 2, (y1 + y2) // 2, x2 - x1, y2 - y1))
            _, texture, colour = class_style(class_index[name])
            row = [attribute_to_idx[colour]] + ([attribute_to_idx[texture]] if texture != "plain" else [])
            attribute_rows.append(row + [0] * (MAX_ATTRIBUTES - len(row)))
        for subject, obj, predicate in relations:
            relationships.append((first_row + subject, first_row + obj))
            predicates.append(predicate_to_idx[_resolve_predicate(predicate, kept_predicates)])
        boxes_per_image.append(len(objects))
        relations_per_image.append(len(relations))
        image_data.append({"image_id": image_id, "width": width, "height": height,
                           "url": f"VG_100K/{image_id}.jpg", "coco_id": None, "flickr_id": None})

    first_box, last_box = first_last_indices(boxes_per_image)
    first_rel, last_rel = first_last_indices(relations_per_image)
    with h5py.File(os.path.join(out_dir, "VG-SGG-with-attri.h5"), "w", track_order=False) as h5:
        arrays = {
            "split": split,
            "img_to_first_box": first_box, "img_to_last_box": last_box,
            "img_to_first_rel": first_rel, "img_to_last_rel": last_rel,
            "labels": np.array(labels, dtype=np.int64).reshape(-1, 1),
            "attributes": np.array(attribute_rows, dtype=np.int64).reshape(-1, MAX_ATTRIBUTES),
            "boxes_1024": np.array(boxes, dtype=np.int32).reshape(-1, 4),
            "relationships": np.array(relationships, dtype=np.int32).reshape(-1, 2),
            "predicates": np.array(predicates, dtype=np.int64).reshape(-1, 1),
        }
        for key, array in arrays.items():
            h5.create_dataset(key, data=array, track_times=False)

    idx_to_label = {str(i): name for name, i in label_to_idx.items()}
    idx_to_predicate = {str(i): name for name, i in predicate_to_idx.items()}
    idx_to_attribute = {str(i): name for name, i in attribute_to_idx.items()}
    object_count = Counter(idx_to_label[str(i)] for i in labels)
    predicate_count = Counter(idx_to_predicate[str(i)] for i in predicates)
    attribute_count = Counter(idx_to_attribute[str(a)] for row in attribute_rows for a in row if a)
    dicts = {
        "label_to_idx": label_to_idx, "idx_to_label": idx_to_label,
        "predicate_to_idx": predicate_to_idx, "idx_to_predicate": idx_to_predicate,
        "attribute_to_idx": attribute_to_idx, "idx_to_attribute": idx_to_attribute,
        "object_count": {name: object_count[name] for name in sorted(label_to_idx)},
        "predicate_count": {name: predicate_count[name] for name in sorted(predicate_to_idx)},
        "attribute_count": {name: attribute_count[name] for name in sorted(attribute_to_idx)},
    }
    with open(os.path.join(out_dir, "VG-SGG-dicts-with-attri.json"), "w") as f:
        json.dump(dicts, f, indent=1)
    with open(os.path.join(out_dir, "image_data.json"), "w") as f:
        json.dump(image_data, f)

    catalog_path = os.path.join(out_dir, "paths_catalog.py")
    with open(catalog_path, "w") as f:
        f.write(CATALOG_TEMPLATE.format(num_val_im=num_val, source=__name__))
    opts = {
        "PATHS_CATALOG": catalog_path,
        "MODEL.ROI_BOX_HEAD.NUM_CLASSES": len(classes) + 1,
        "MODEL.ROI_RELATION_HEAD.NUM_CLASSES": len(kept_predicates) + 1,
        "MODEL.ROI_ATTRIBUTE_HEAD.NUM_ATTRIBUTES": len(attributes) + 1,
    }
    with open(os.path.join(out_dir, "dataset.opts"), "w") as f:
        f.writelines(f"{key} {value}\n" for key, value in opts.items())

    stats = dataset_statistics(split, num_val, np.array(labels), np.array(predicates), boxes_per_image,
                               relations_per_image, idx_to_label, idx_to_predicate)
    stats["settings"] = {"preset": preset, "seed": seed, "num_images": num_images, "image_size": image_size,
                         "num_object_classes": num_object_classes, "num_predicates": num_predicates,
                         "test_fraction": test_fraction, "num_val_images": num_val}
    with open(os.path.join(out_dir, "stats.json"), "w") as f:
        json.dump(stats, f, indent=1)
    coco_images = None
    if coco_layout:
        from .coco_layout import write_coco_layout

        coco_images = write_coco_layout(out_dir, out_dir, num_val)
        # datasets.name keys the host's statistics cache; type and data_dir select RelationDataset;
        # the split lists name the splits (by suffix): the host's final test reads datasets.test only.
        # "++" adds the keys that the host's YAML files lack.
        lines = ["datasets.name=synthetic_vg", "datasets.type=coco", f"datasets.data_dir={out_dir}",
                 *(f"datasets.{part}=[synthetic_vg_{part}]" for part in ("train", "val", "test"))]
        with open(os.path.join(out_dir, SGG_BENCHMARK_OVERRIDES), "w") as f:
            f.writelines(f"++{line}\n" for line in lines)

    return {
        "out_dir": out_dir, "num_train": num_trainval - num_val, "num_val": num_val, "num_test": num_test,
        "num_boxes": len(labels), "num_relations": len(predicates),
        "predicate_count": dicts["predicate_count"], "opts": opts, "stats": stats, "coco_images": coco_images,
    }


def dataset_statistics(split, num_val, labels, predicates, boxes_per_image, relations_per_image,
                       idx_to_label, idx_to_predicate):
    """Class and predicate counts per split as the host splits them, most frequent first.

    The host's train split is the split-0 images with boxes and relations minus the first
    ``num_val`` of them (its validation split); test is split 2.
    """
    image_of_box = np.repeat(np.arange(len(split)), boxes_per_image)
    image_of_relation = np.repeat(np.arange(len(split)), relations_per_image)
    trainval = np.flatnonzero((split == TRAIN_SPLIT) & (np.asarray(boxes_per_image) > 0)
                              & (np.asarray(relations_per_image) > 0))
    part_of_image = np.full(len(split), "", dtype=object)
    part_of_image[trainval[num_val:]] = "train"
    part_of_image[trainval[:num_val]] = "val"
    part_of_image[split == TEST_SPLIT] = "test"
    stats = {"images": {part: int((part_of_image == part).sum()) for part in ("train", "val", "test")}}
    for what, values, image_of, names in (("predicates", predicates, image_of_relation, idx_to_predicate),
                                          ("objects", labels, image_of_box, idx_to_label)):
        counts = {}
        for part in ("train", "val", "test"):
            in_part = values[part_of_image[image_of] == part]
            per_class = np.bincount(in_part, minlength=len(names) + 1)[1:]
            counts[part] = {names[str(i + 1)]: int(c) for i, c in sorted(enumerate(per_class), key=lambda ic: -ic[1])}
        train = list(counts["train"].values())
        stats[what] = {"count": counts, "most_over_least_train": (train[0] / train[-1]) if train[-1] else None}
    return stats


# The catalog SGB's data builder executes (cfg.PATHS_CATALOG). It must be self-contained: the host
# loads it by path and registers it as maskrcnn_benchmark.config.paths_catalog.
CATALOG_TEMPLATE = '''"""Paths catalog for the synthetic VG-format dataset in this folder (written by {source}).

Pass it to SGB as ``PATHS_CATALOG <this file>``; it serves the dataset names of SGB's stock
relation config, VG_stanford_filtered_with_attribute_{{train,val,test}}, from this folder.
"""

import os

DATA_DIR = os.path.dirname(os.path.abspath(__file__))
DATASET_NAME = "VG_stanford_filtered_with_attribute"
NUM_VAL_IMAGES = {num_val_im}  # the first training images form the validation split


class DatasetCatalog:
    FILES = {{
        "img_dir": "VG_100K",
        "roidb_file": "VG-SGG-with-attri.h5",
        "dict_file": "VG-SGG-dicts-with-attri.json",
        "image_file": "image_data.json",
    }}

    @staticmethod
    def get(name, cfg):
        base, _, split = name.rpartition("_")
        if base != DATASET_NAME or split not in ("train", "val", "test"):
            raise RuntimeError(
                "Dataset not available: {{}}. This catalog ({{}}) serves {{}}_train, {{}}_val and "
                "{{}}_test".format(name, __file__, DATASET_NAME, DATASET_NAME, DATASET_NAME))
        relation = cfg.MODEL.RELATION_ON
        head = cfg.MODEL.ROI_RELATION_HEAD
        args = {{key: os.path.join(DATA_DIR, value) for key, value in DatasetCatalog.FILES.items()}}
        args.update(
            split=split,
            num_val_im=NUM_VAL_IMAGES,
            # as SGB's own catalog: empty-relation images only matter when relations are trained,
            # and overlap filtering only applies to detected boxes when the config asks for it
            filter_empty_rels=relation,
            filter_non_overlap=(not head.USE_GT_BOX) and relation and head.REQUIRE_BOX_OVERLAP,
            flip_aug=cfg.MODEL.FLIP_AUG,
            custom_eval=cfg.TEST.CUSTUM_EVAL,
            custom_path=cfg.TEST.CUSTUM_PATH,
        )
        return dict(factory="VGDataset", args=args)


class ModelCatalog:
    @staticmethod
    def get(name):
        raise RuntimeError(
            "catalog://{{}}: the synthetic dataset's catalog lists no pretrained weights; set "
            "MODEL.WEIGHT (and MODEL.PRETRAINED_DETECTOR_CKPT) to a checkpoint file or to an empty "
            "string".format(name))
'''


def add_arguments(parser):
    parser.add_argument("out_dir", metavar="OUT", help="folder to write the dataset into")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="default",
                        help="default: 160 small scenes, 10 predicates; bench: 4,000 images, 21 long-tailed "
                             "predicates, scene context deciding some of them (default: default)")
    parser.add_argument("--num-images", type=int, default=None, help="train + val + test images (preset: 160 / 4000)")
    parser.add_argument("--num-object-classes", type=int, default=None,
                        help=f"object classes, {MIN_OBJECT_CLASSES}-{len(OBJECT_VOCABULARY)} (preset: 15 / 20)")
    parser.add_argument("--num-predicates", type=int, default=None,
                        help=f"predicate classes, 1-{DEFAULT_PREDICATES}, bench 1-{len(PREDICATE_VOCABULARY)} "
                             f"(preset: 10 / {len(PREDICATE_VOCABULARY)})")
    parser.add_argument("--seed", type=int, default=0, help="random seed; the same seed writes the same bytes")
    parser.add_argument("--image-size", type=int, default=None, help="longest image side in pixels (preset: 320)")
    parser.add_argument("--test-fraction", type=float, default=0.25, help="share of test images (default 0.25)")
    parser.add_argument("--num-val-images", type=int, default=None,
                        help="validation images taken from the training split (default 15%% of train+val)")
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty folder")
    parser.add_argument("--coco", action="store_true",
                        help="also write Maelic/SGG-Benchmark's COCO-JSON layout (OUT/{train,val,test}/"
                             f"_annotations.coco.json) and OUT/{SGG_BENCHMARK_OVERRIDES}, its Hydra overrides")


def run(args):
    try:
        summary = write_synthetic_vg(
            args.out_dir, num_images=args.num_images, num_object_classes=args.num_object_classes,
            num_predicates=args.num_predicates, seed=args.seed, image_size=args.image_size,
            test_fraction=args.test_fraction, num_val_images=args.num_val_images, overwrite=args.overwrite,
            preset=args.preset, coco_layout=args.coco)
    except (ValueError, FileExistsError) as error:
        print(f"sgg-plugins make-synthetic-vg: error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {summary['out_dir']}: {summary['num_train']} train, {summary['num_val']} val, "
          f"{summary['num_test']} test images; {summary['num_boxes']} boxes, {summary['num_relations']} relations")
    print("predicates: " + ", ".join(f"{name} {count}" for name, count in
                                     sorted(summary["predicate_count"].items(), key=lambda kv: -kv[1])))
    ratio = summary["stats"]["predicates"]["most_over_least_train"]
    print(f"training predicates most / least frequent: {ratio:.1f}" if ratio else
          "training predicates: some predicate has no training relation")
    print("class and predicate counts per split: " + os.path.join(summary["out_dir"], "stats.json"))
    print("add to the host's command line: $(cat " + os.path.join(summary["out_dir"], "dataset.opts") + ")")
    if summary["coco_images"]:
        counts = summary["coco_images"]
        print(f"SGG-Benchmark's COCO-JSON layout: {counts['train']} train, {counts['val']} val, {counts['test']} test "
              "images; add to its command line: $(cat " + os.path.join(summary["out_dir"], SGG_BENCHMARK_OVERRIDES) + ")")
    return 0
