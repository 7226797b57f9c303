"""Data and evaluator shims for SGTR's Visual Genome path (``cvpods/data/datasets/vg.py``,
``cvpods/evaluation/sgg_vg_evaluation.py``), so that a dataset in SGB's VG file format that is not
the full VG, at a path of the user's choosing, trains and evaluates with the host's own code.

The real Visual Genome under ``<checkout>/datasets/vg`` goes through the host's code unchanged:
each shim below only acts on what the host would reject or cannot find, and says so once.

- **dataset location** (``SGG_PLUGINS_SGTR_VG_DIR``, the launchers' ``--vg-dir``): SGTR's paths are
  not in its config but in the table ``_PREDEFINED_SPLITS_VG_STANFORD_SGDET``, relative to
  ``<checkout>/datasets``; an absolute path placed there is kept by the host's ``os.path.join``.
- **image count**: ``load_image_filenames`` asserts exactly 108,073 images; another count is read
  the same way (corrupted VG ids skipped, images named ``<image_id>.jpg``) without the assert.
- **validation size**: the host takes the first 5,000 training images as validation (10 in its
  DEBUG mode); a training split that 5,000 would empty gets the host's own DEBUG sizes.
- **zero-shot triplets**: the evaluator loads them from the author's absolute path; the file of
  that name in the dataset's annotation folder is used instead, else none (zR@K is then 0).
- **stage-wise recall summary**: its relation-pair proposal statistics (``int`` of the mean of the
  per-image ranges) crash on an empty list, which is what an evaluation in which no image has a
  prediction gives (a model early in training); they are left out of the summary then.
"""

import functools
import json
import logging
import os

import numpy as np
import torch

VG_DIR_VARIABLE = "SGG_PLUGINS_SGTR_VG_DIR"
VG_IMAGE_COUNT = 108073  # what the host asserts: the VG-150 split's image_data.json less 4 corrupted images
HOST_VAL_IMAGES = 5000
HOST_DEBUG_VAL_IMAGES = 10  # the host's validation size when its config has DEBUG on
CORRUPTED_VG_IMAGES = frozenset({"1592.jpg", "1722.jpg", "4616.jpg", "4617.jpg"})  # skipped by the host
ZERO_SHOT_FILE = "zeroshot_triplet.pytorch"
IMAGE_FOLDERS = ("VG_100K", "VG_100k_images", "images")  # SGB's writer, SGTR's README, a plain name

_logged = set()


def _once(key, message, *args):
    if key not in _logged:
        _logged.add(key)
        logging.getLogger("sgg_plugins").info("sgg-plugins data: " + message, *args)


def vg_folders(vg_dir):
    """(image folder, annotation folder) of a VG-format folder: images in one of IMAGE_FOLDERS, else
    next to the annotation files."""
    vg_dir = os.path.abspath(vg_dir)
    missing = [name for name in ("VG-SGG-with-attri.h5", "VG-SGG-dicts-with-attri.json", "image_data.json")
               if not os.path.isfile(os.path.join(vg_dir, name))]
    if missing:
        raise FileNotFoundError(
            f"{VG_DIR_VARIABLE} / --vg-dir {vg_dir} has no {', '.join(missing)}: point it at a folder in SGB's VG "
            "format (sgg-plugins make-synthetic-vg writes one)"
        )
    images = next((os.path.join(vg_dir, n) for n in IMAGE_FOLDERS if os.path.isdir(os.path.join(vg_dir, n))), vg_dir)
    return images, vg_dir


def point_splits_at(table, vg_dir):
    """Make every VG-Stanford split of the host's path table read ``vg_dir`` (absolute paths)."""
    images, annotations = vg_folders(vg_dir)
    for name in table["vgs"]:
        table["vgs"][name] = (images, annotations)
    return images, annotations


CLASS_COUNT_KEYS = ("MODEL.DETR.NUM_CLASSES", "MODEL.ROI_RELATION_HEAD.NUM_CLASSES")


def class_count_opts(vg_dir):
    """The opts that size SGTR's classifiers for the dataset at ``vg_dir``: object classes and
    predicates, neither counting background (the host adds it), read from its dicts file."""
    with open(os.path.join(vg_dir, "VG-SGG-dicts-with-attri.json")) as f:
        dicts = json.load(f)
    counts = (len(dicts["label_to_idx"]), len(dicts["predicate_to_idx"]))
    return [item for key, count in zip(CLASS_COUNT_KEYS, counts) for item in (key, str(count))]


def load_image_filenames_any_count(original):
    """The host's ``load_image_filenames``, for datasets with any number of images."""
    @functools.wraps(original)
    def load_image_filenames(img_dir, image_file, check_img_file):
        with open(image_file) as f:
            images = json.load(f)
        names = ["{}.jpg".format(img["image_id"]) for img in images]
        kept = [i for i, name in enumerate(names) if name not in CORRUPTED_VG_IMAGES]
        if len(kept) == VG_IMAGE_COUNT:
            return original(img_dir, image_file, check_img_file)
        _once("count", "%d images, not Visual Genome's %d: the host's image-count check is relaxed", len(kept),
              VG_IMAGE_COUNT)
        fns, info = [], []
        for i in kept:
            filename = os.path.join(img_dir, names[i])
            if os.path.exists(filename) or not check_img_file:
                fns.append(filename)
                info.append(images[i])
        return fns, info

    load_image_filenames.sgg_plugins_original = original
    return load_image_filenames


def training_images(anno_file):
    """Training-split images of a VG h5 that have boxes and relations (what the host keeps)."""
    import h5py

    with h5py.File(anno_file, "r") as h5:
        keep = (h5["split"][:] == 0) & (h5["img_to_first_box"][:] >= 0) & (h5["img_to_first_rel"][:] >= 0)
    return int(keep.sum())


def validation_size(anno_file, debug=False):
    """How many of the training split's first images the host, with these shims, holds out as
    validation: its 5,000, or its DEBUG size when DEBUG is on or 5,000 would leave no training image."""
    if debug or training_images(anno_file) <= HOST_VAL_IMAGES:
        return HOST_DEBUG_VAL_IMAGES
    return HOST_VAL_IMAGES


def small_dataset_validation(original):
    """``_load_annotations`` with the host's DEBUG split sizes when its 5,000 validation images would
    leave no training image."""
    @functools.wraps(original)
    def _load_annotations(self, anno_file):
        if self.cfg.DEBUG or validation_size(anno_file) == HOST_VAL_IMAGES:
            return original(self, anno_file)
        _once("val", "%s has <= %d training images: validation is the host's DEBUG size (the first 10)",
              anno_file, HOST_VAL_IMAGES)
        self.cfg.DEBUG = True
        try:
            return original(self, anno_file)
        finally:
            self.cfg.DEBUG = False

    _load_annotations.sgg_plugins_original = original
    return _load_annotations


def zero_shot_from_dataset(original, annotation_folder):
    """``torch.load`` that serves the evaluator's absolute zero-shot path from the dataset's folder."""
    @functools.wraps(original)
    def load(f, *args, **kwargs):
        if not (isinstance(f, str) and os.path.basename(f) == ZERO_SHOT_FILE and not os.path.exists(f)):
            return original(f, *args, **kwargs)
        local = os.path.join(annotation_folder(), ZERO_SHOT_FILE)
        if os.path.exists(local):
            _once("zs", "zero-shot triplets from %s (the host names %s)", local, f)
            return original(local, *args, **kwargs)
        _once("zs-none", "no %s at %s or %s: no zero-shot triplets (zR@K reads 0)", ZERO_SHOT_FILE, f, local)
        return torch.zeros((0, 3), dtype=torch.long)

    load.sgg_plugins_original = original
    return load


def mean_or_nan(values):
    """``np.mean`` of the per-class recalls as a float (NaN when empty), whatever their element type."""
    values = np.asarray([float(v) for v in values], dtype=float)
    return float(values.mean()) if values.size else float("nan")


def without_empty_pair_statistics(original):
    """A stage-wise recall summary method that skips the pair-proposal statistics when no image
    contributed any (``eval_rel_pair_prop`` is what gates them in the host)."""
    @functools.wraps(original)
    def summary(self, mode, *args, **kwargs):
        ranges = self.result_dict.get(f"{mode}_{self.type}_effective_union_pairs_range")
        if not self.eval_rel_pair_prop or ranges is None or len(ranges) > 0:
            return original(self, mode, *args, **kwargs)
        _once("pairs", "no image had a relation prediction: the stage-wise pair-proposal statistics are left out")
        gate = self.eval_rel_pair_prop
        self.eval_rel_pair_prop = False
        try:
            return original(self, mode, *args, **kwargs)
        finally:
            self.eval_rel_pair_prop = gate

    summary.sgg_plugins_original = original
    return summary


def install_data_shims(host_root):
    """Apply the data and evaluator shims to the imported host. Idempotent."""
    from cvpods.data.datasets import paths_route, vg

    vg_dir = os.environ.get(VG_DIR_VARIABLE)
    if vg_dir:
        images, annotations = point_splits_at(paths_route._PREDEFINED_SPLITS_VG_STANFORD_SGDET, vg_dir)
        _once("dir", "Visual Genome splits read %s (images in %s)", annotations, images)
    if not hasattr(vg.load_image_filenames, "sgg_plugins_original"):
        vg.load_image_filenames = load_image_filenames_any_count(vg.load_image_filenames)
    dataset = vg.VGStanfordDataset
    if not hasattr(dataset._load_annotations, "sgg_plugins_original"):
        dataset._load_annotations = small_dataset_validation(dataset._load_annotations)
    from cvpods.evaluation.vg_sgg_eval_tools import SGStagewiseRecall

    for method in ("generate_print_string", "generate_res_dict"):
        if not hasattr(getattr(SGStagewiseRecall, method), "sgg_plugins_original"):
            setattr(SGStagewiseRecall, method, without_empty_pair_statistics(getattr(SGStagewiseRecall, method)))
    if not hasattr(torch.load, "sgg_plugins_zero_shot"):
        table = paths_route._PREDEFINED_SPLITS_VG_STANFORD_SGDET

        def annotation_folder():
            anno = table["vgs"]["vgs_test"][1]
            return anno if os.path.isabs(anno) else os.path.join(str(host_root), "datasets", anno)

        torch.load = zero_shot_from_dataset(torch.load, annotation_folder)
        torch.load.sgg_plugins_zero_shot = True
