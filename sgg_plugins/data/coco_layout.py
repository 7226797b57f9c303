"""A dataset in SGB's Visual Genome layout, rewritten in SGG-Benchmark's COCO-JSON layout.

Maelic/SGG-Benchmark reads scene graphs from one COCO-style file per split,
``<data_dir>/{train,val,test}/_annotations.coco.json``, with the images in the same folder
(``RelationDataset`` in its ``sgg_benchmark/data/datasets/data.py``):

* ``images``: ``{id, file_name, width, height}``, ``file_name`` relative to the split folder;
* ``categories``: ``{id, name}`` with ids from 1 (the host adds ``__background__`` as 0 and orders
  the classes by id);
* ``annotations``: ``{id, image_id, category_id, bbox: [x, y, w, h]}`` in pixels;
* ``rel_categories``: ``{id, name}`` with ids from 1 (0 is the host's background predicate);
* ``rel_annotations``: ``{id, image_id, subject_id, object_id, predicate_id}``, the two ends
  naming ``annotations`` ids.

``write_coco_layout(vg_dir, out_dir)`` reads the four files SGB reads (``VG-SGG-with-attri.h5``,
``VG-SGG-dicts-with-attri.json``, ``image_data.json`` and the images) and writes that layout. The
splits are SGB's, so that both hosts train, validate and test on the same images: test is the h5's
split 2; validation is the first ``num_val_images`` split-0 images that have boxes and relations
(SGB's ``num_val_im``), train the remaining ones. Class and predicate ids are the dicts' 1-based
indices, so a class or predicate has the same number in both layouts. Boxes go from the 1024
canvas (``boxes_1024``: centre x, centre y, width, height) to pixels as SGB converts them: corners
on the canvas, times ``max(width, height) / 1024``. Images are hard-linked into the split folders
(copied where the file system cannot link), not re-encoded.
"""

import json
import os
import shutil

import numpy as np

from .synthetic_scenes import BOX_SCALE  # the canvas SGB's boxes_1024 refer to
SPLITS = ("train", "val", "test")
ANNOTATION_FILE = "_annotations.coco.json"
VG_TRAIN_SPLIT, VG_TEST_SPLIT = 0, 2


def split_of_images(split, boxes_per_image, relations_per_image, num_val_images):
    """Per image: "train", "val", "test" or "" (a split-0 image SGB drops: no box or no relation)."""
    split = np.asarray(split)
    usable = (split == VG_TRAIN_SPLIT) & (np.asarray(boxes_per_image) > 0) & (np.asarray(relations_per_image) > 0)
    trainval = np.flatnonzero(usable)
    parts = np.full(len(split), "", dtype=object)
    parts[trainval[num_val_images:]] = "train"
    parts[trainval[:num_val_images]] = "val"
    parts[split == VG_TEST_SPLIT] = "test"
    return parts


def _corner_boxes(boxes_1024, width, height):
    """(N, 4) x1 y1 x2 y2 in pixels from centre-size boxes on the 1024 canvas, as SGB converts them."""
    boxes = np.asarray(boxes_1024, dtype=np.float64).reshape(-1, 4)
    corners = np.concatenate([boxes[:, :2] - boxes[:, 2:] / 2, boxes[:, :2] + boxes[:, 2:] / 2], axis=1)
    return corners * max(width, height) / BOX_SCALE


def _link_or_copy(source, target):
    if os.path.exists(target):
        os.remove(target)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _vg_image_path(vg_dir, image_id):
    for folder in ("VG_100K", "VG_100k_images", "images"):
        path = os.path.join(vg_dir, folder, f"{image_id}.jpg")
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"no image {image_id}.jpg under {vg_dir}/VG_100K (nor VG_100k_images/, images/)")


def write_coco_layout(vg_dir, out_dir, num_val_images):
    """Write ``out_dir/{train,val,test}/_annotations.coco.json`` (and the images) from the VG-format
    dataset in ``vg_dir``. Returns ``{split: number of images}``."""
    import h5py

    with open(os.path.join(vg_dir, "VG-SGG-dicts-with-attri.json")) as f:
        dicts = json.load(f)
    with open(os.path.join(vg_dir, "image_data.json")) as f:
        image_data = json.load(f)
    with h5py.File(os.path.join(vg_dir, "VG-SGG-with-attri.h5"), "r") as h5:
        arrays = {key: h5[key][()] for key in ("split", "img_to_first_box", "img_to_last_box", "img_to_first_rel",
                                               "img_to_last_rel", "labels", "boxes_1024", "relationships",
                                               "predicates")}
    first_box, last_box = arrays["img_to_first_box"], arrays["img_to_last_box"]
    first_rel, last_rel = arrays["img_to_first_rel"], arrays["img_to_last_rel"]
    boxes_per_image = np.where(first_box >= 0, last_box - first_box + 1, 0)
    relations_per_image = np.where(first_rel >= 0, last_rel - first_rel + 1, 0)
    parts = split_of_images(arrays["split"], boxes_per_image, relations_per_image, num_val_images)

    categories = [{"id": int(i), "name": name} for name, i in sorted(dicts["label_to_idx"].items(), key=lambda kv: kv[1])]
    rel_categories = [{"id": int(i), "name": name}
                      for name, i in sorted(dicts["predicate_to_idx"].items(), key=lambda kv: kv[1])]
    files = {part: {"images": [], "annotations": [], "rel_annotations": [], "categories": categories,
                    "rel_categories": rel_categories} for part in SPLITS}
    for part in SPLITS:
        os.makedirs(os.path.join(out_dir, part), exist_ok=True)
    for index, info in enumerate(image_data):
        part = parts[index]
        if not part:
            continue
        image_id, width, height = int(info["image_id"]), int(info["width"]), int(info["height"])
        file_name = f"{image_id}.jpg"
        _link_or_copy(_vg_image_path(vg_dir, image_id), os.path.join(out_dir, part, file_name))
        coco = files[part]
        coco["images"].append({"id": image_id, "file_name": file_name, "width": width, "height": height})
        if first_box[index] < 0:
            continue
        rows = range(first_box[index], last_box[index] + 1)
        corners = _corner_boxes(arrays["boxes_1024"][rows.start:rows.stop], width, height)
        for row, (x1, y1, x2, y2) in zip(rows, corners):
            # Annotation ids are the h5's global box rows + 1: unique across splits.
            coco["annotations"].append({
                "id": int(row) + 1, "image_id": image_id, "category_id": int(arrays["labels"][row, 0]),
                "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
                "area": float((x2 - x1) * (y2 - y1)), "iscrowd": 0})
        if first_rel[index] < 0:
            continue
        for row in range(first_rel[index], last_rel[index] + 1):
            subject, obj = arrays["relationships"][row]
            coco["rel_annotations"].append({
                "id": int(row) + 1, "image_id": image_id, "subject_id": int(subject) + 1,
                "object_id": int(obj) + 1, "predicate_id": int(arrays["predicates"][row, 0])})
    for part, coco in files.items():
        with open(os.path.join(out_dir, part, ANNOTATION_FILE), "w") as f:
            json.dump(coco, f)
    return {part: len(files[part]["images"]) for part in SPLITS}
