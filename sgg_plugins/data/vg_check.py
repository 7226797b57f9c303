"""Checks of a dataset in SGB's Visual Genome layout, before hours of training find its faults.

``check_vg_dataset(files, ...)`` reads the four files SGB's ``VGDataset`` reads (the h5 of boxes
and relations, the class dictionaries, the image list, the image folder) and returns one
:class:`Finding` per aspect: the h5 opens and every field reads to the end (a truncated download
fails here, not in the middle of an epoch); each field has the shape and integer dtype the host
indexes it with; every per-image index range lies inside the box and relation arrays and every
relation's boxes inside its own image's boxes (the host's bare ``assert`` otherwise); boxes are
non-empty and inside their images; labels, predicates and attributes are valid dictionary indices;
the dictionaries agree with the config's class counts; the image list pairs one to one with the
h5's images; every image file is present (and, with ``read_images``, decodes at its listed size:
``image_decode``, which remembers the files that did).

Everything is vectorised over boxes and relations, so the full VG-150 (1.1 M boxes, 0.6 M
relations) checks in seconds without ``read_images``.
"""

import json
import os
from dataclasses import dataclass

import numpy as np

from .image_decode import first_bad_image

OK, WARN, FAIL = "ok", "warn", "fail"
BOX_SCALE = 1024  # the host's boxes_1024: centre x, centre y, width, height on a 1024 longest side
HOST_SKIPPED_FILES = frozenset({"1592.jpg", "1722.jpg", "4616.jpg", "4617.jpg"})  # corrupted in VG
SPLIT_VALUES = (0, 1, 2)  # train, val (unused by SGB), test
# Boxes are stored as integer centres and sizes, so a corner may land half a unit past the edge.
EDGE_TOLERANCE = 1.0

# field -> (number of columns or None for 1-D, what its rows are)
H5_FIELDS = {
    "split": (None, "image"),
    "img_to_first_box": (None, "image"),
    "img_to_last_box": (None, "image"),
    "img_to_first_rel": (None, "image"),
    "img_to_last_rel": (None, "image"),
    "labels": (1, "box"),
    "attributes": ("any", "box"),
    f"boxes_{BOX_SCALE}": (4, "box"),
    "relationships": (2, "relation"),
    "predicates": (1, "relation"),
}
REGENERATE = "regenerate the file, or point PATHS_CATALOG at a good copy"


@dataclass
class Finding:
    verdict: str  # OK, WARN or FAIL
    subject: str  # what was checked: a file, or "<file> <field>"
    detail: str  # what was found; for FAIL also the way out

    def line(self):
        return f"{self.subject}: {self.detail}"


@dataclass
class VGFiles:
    roidb_file: str
    dict_file: str
    image_file: str
    img_dir: str

    @classmethod
    def from_catalog_args(cls, args):
        return cls(args["roidb_file"], args["dict_file"], args["image_file"], args["img_dir"])


def first_failure(findings):
    return next((f for f in findings if f.verdict == FAIL), None)


def _rows(mask):
    """The first few row numbers where ``mask`` holds, for a message."""
    rows = np.flatnonzero(mask)
    shown = ", ".join(str(r) for r in rows[:3])
    return f"{shown}{', ...' if rows.size > 3 else ''} ({rows.size} in all)"


def _expand_ranges(first, counts):
    """The rows ``first[i], ..., first[i] + counts[i] - 1`` of every range, concatenated."""
    counts = counts.astype(np.int64)
    starts = np.repeat(first.astype(np.int64), counts)
    range_offsets = np.repeat(np.cumsum(counts) - counts, counts)
    return starts + np.arange(int(counts.sum())) - range_offsets


def _read_h5(path):
    """({field: array}, findings) with every field the host reads, read to the end."""
    import h5py

    name = os.path.basename(path)
    if not os.path.isfile(path):
        return None, [Finding(FAIL, name, f"{path} does not exist: fix roidb_file in PATHS_CATALOG")]
    try:
        with h5py.File(path, "r") as h5:
            missing = [key for key in H5_FIELDS if key not in h5]
            if missing:
                return None, [Finding(FAIL, name, f"has no field {', '.join(missing)}: it is not an SGB "
                                                  f"VG-SGG h5 ({REGENERATE})")]
            arrays = {key: h5[key][()] for key in H5_FIELDS}
    except OSError as error:  # h5py's words for truncated or foreign files
        reason = str(error).split("(", 1)[-1].rstrip(")") if "(" in str(error) else str(error)
        return None, [Finding(FAIL, name, f"cannot be read ({reason}): truncated or not HDF5; {REGENERATE}")]
    return arrays, [Finding(OK, name, f"opens, {len(H5_FIELDS)} fields read to the end")]


def _check_shapes(name, arrays):
    counts = {"image": arrays["split"].shape[0], "box": arrays["labels"].shape[0],
              "relation": arrays["relationships"].shape[0]}
    for key, (columns, rows_of) in H5_FIELDS.items():
        array = arrays[key]
        expected = f"({rows_of}s,)" if columns is None else f"({rows_of}s, {columns})"
        wrong_rank = array.ndim != (1 if columns is None else 2)
        wrong_columns = columns not in (None, "any") and array.shape[-1] != columns
        if wrong_rank or wrong_columns or array.shape[0] != counts[rows_of]:
            return Finding(FAIL, f"{name} {key}", f"has shape {array.shape}, expected {expected} with "
                                                  f"{counts[rows_of]} {rows_of}s; {REGENERATE}")
        if not np.issubdtype(array.dtype, np.integer):
            return Finding(FAIL, f"{name} {key}", f"has dtype {array.dtype}; the host indexes with it, so it "
                                                  f"must be an integer type; {REGENERATE}")
    return Finding(OK, f"{name} shapes", "{image} images, {box} boxes, {relation} relations; integer fields"
                   .format(**counts))


def _check_ranges(name, arrays):
    """Per-image index ranges inside the arrays; each relation's boxes inside its image's boxes."""
    num_boxes, num_rels = arrays["labels"].shape[0], arrays["relationships"].shape[0]
    for kind, total in (("box", num_boxes), ("rel", num_rels)):
        first, last = arrays[f"img_to_first_{kind}"], arrays[f"img_to_last_{kind}"]
        has = first >= 0
        bad = (has & ((last < first) | (last >= total))) | (~has & (last >= 0)) | (first < -1)
        if bad.any():
            return Finding(FAIL, f"{name} img_to_first_{kind}/img_to_last_{kind}",
                           f"image rows {_rows(bad)} index outside the {total} {kind} rows "
                           f"(or last < first); {REGENERATE}")
    split = arrays["split"]
    if not np.isin(split, SPLIT_VALUES).all():
        return Finding(FAIL, f"{name} split", f"image rows {_rows(~np.isin(split, SPLIT_VALUES))} have a "
                                              f"split other than 0 (train) or 2 (test); {REGENERATE}")

    # The image each relation row belongs to, from the per-image relation ranges.
    first_rel, last_rel = arrays["img_to_first_rel"], arrays["img_to_last_rel"]
    with_rels = np.flatnonzero(first_rel >= 0)
    rel_counts = last_rel[with_rels] - first_rel[with_rels] + 1
    rel_rows = _expand_ranges(first_rel[with_rels], rel_counts)
    rel_image = np.repeat(with_rels, rel_counts)
    relationships = arrays["relationships"][rel_rows]
    low = arrays["img_to_first_box"][rel_image][:, None]
    high = arrays["img_to_last_box"][rel_image][:, None]
    outside = ((relationships < low) | (relationships > high) | (low < 0)).any(1)
    if outside.any():
        row = np.flatnonzero(outside)[0]
        return Finding(FAIL, f"{name} relationships",
                       f"relation row {rel_rows[row]} (image row {rel_image[row]}) points at box rows "
                       f"{relationships[row].tolist()}, outside that image's boxes "
                       f"{low[row, 0]}..{high[row, 0]} ({int(outside.sum())} such relations): relations point "
                       f"past the box arrays; {REGENERATE}")
    return Finding(OK, f"{name} index ranges", "every image's boxes and relations in range, every relation "
                                               "inside its own image's boxes")


def _read_json(path, catalog_field):
    """(content, None), or (None, the failing Finding) for a missing or unreadable file."""
    name = os.path.basename(path)
    if not os.path.isfile(path):
        return None, Finding(FAIL, name, f"{path} does not exist: fix {catalog_field} in PATHS_CATALOG")
    try:
        with open(path) as f:
            return json.load(f), None
    except (OSError, ValueError) as error:
        return None, Finding(FAIL, name, f"is not readable JSON ({error}); {REGENERATE}")


def _load_dicts(path):
    name = os.path.basename(path)
    info, failure = _read_json(path, "dict_file")
    if failure:
        return None, failure
    missing = [k for k in ("label_to_idx", "predicate_to_idx", "attribute_to_idx") if k not in info]
    if missing:
        return None, Finding(FAIL, name, f"has no {', '.join(missing)}: not an SGB VG-SGG dicts file")
    for key in ("label_to_idx", "predicate_to_idx", "attribute_to_idx"):
        indices = sorted(info[key].values())
        if indices != list(range(1, len(indices) + 1)):
            return None, Finding(FAIL, f"{name} {key}", f"indices are not 1..{len(indices)} (0 is the host's "
                                                        f"background); {REGENERATE}")
    return info, None


def _check_classes(name, dict_name, arrays, info, class_counts):
    """Labels, predicates and attributes are dictionary indices; the config's counts match the dicts."""
    sizes = {"labels": len(info["label_to_idx"]), "predicates": len(info["predicate_to_idx"]),
             "attributes": len(info["attribute_to_idx"])}
    for key, size in sizes.items():
        low = 0 if key == "attributes" else 1  # attribute 0 pads the rows
        values = arrays[key]
        bad = ((values < low) | (values > size)).any(1)
        if bad.any():
            return Finding(FAIL, f"{name} {key}", f"rows {_rows(bad)} hold values outside {low}..{size}, the "
                                                  f"range {dict_name} defines; the h5 and the dicts do not match")
    for config_key, (key, size) in class_counts.items():
        expected = sizes[key] + 1
        if size is not None and size != expected:
            return Finding(FAIL, config_key, f"is {size} but {dict_name} defines {sizes[key]} {key} + background "
                                             f"= {expected}: set {config_key} {expected}")
    return Finding(OK, dict_name, "{labels} object classes, {predicates} predicates, {attributes} attributes; "
                                  "h5 values in range".format(**sizes)
                   + ("; matches the config's class counts" if class_counts else ""))


def _load_image_list(path, num_images):
    name = os.path.basename(path)
    entries, failure = _read_json(path, "image_file")
    if failure:
        return None, failure
    kept = [e for e in entries if f"{e['image_id']}.jpg" not in HOST_SKIPPED_FILES]
    if len(kept) != num_images:
        return None, Finding(FAIL, name, f"lists {len(kept)} usable images but the h5 has {num_images}: SGB pairs "
                                         "them by position, so they must be the same dataset")
    return kept, None


def _check_boxes(name, arrays, entries):
    boxes = arrays[f"boxes_{BOX_SCALE}"].astype(np.float64)
    empty = (boxes[:, 2] <= 0) | (boxes[:, 3] <= 0) | (boxes[:, 0] < 0) | (boxes[:, 1] < 0)
    if empty.any():
        return Finding(FAIL, f"{name} boxes_{BOX_SCALE}", f"box rows {_rows(empty)} are empty or start left "
                                                          f"of / above the image; {REGENERATE}")
    first, last = arrays["img_to_first_box"], arrays["img_to_last_box"]
    with_boxes = np.flatnonzero(first >= 0)
    box_counts = last[with_boxes] - first[with_boxes] + 1
    box_image = np.repeat(with_boxes, box_counts)
    box_rows = _expand_ranges(first[with_boxes], box_counts)
    sizes = np.array([(e["width"], e["height"]) for e in entries], dtype=np.float64).reshape(-1, 2)
    # the 1024 canvas is the image scaled so that its longest side is 1024
    canvas = sizes * (BOX_SCALE / sizes.max(1, keepdims=True))
    far_corner = boxes[box_rows, :2] + boxes[box_rows, 2:] / 2
    outside = (far_corner > canvas[box_image] + EDGE_TOLERANCE).any(1)
    if outside.any():
        row = np.flatnonzero(outside)[0]
        return Finding(FAIL, f"{name} boxes_{BOX_SCALE}",
                       f"box row {box_rows[row]} of image row {box_image[row]} reaches {far_corner[row].tolist()} on "
                       f"the {BOX_SCALE} canvas, past the image's {canvas[box_image[row]].round(1).tolist()} "
                       f"({int(outside.sum())} such boxes): the h5 and image_data.json sizes disagree")
    return Finding(OK, f"{name} boxes", "every box non-empty and inside its image")


def _check_images(img_dir, entries, read_images):
    paths = [os.path.join(img_dir, f"{e['image_id']}.jpg") for e in entries]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        return Finding(FAIL, "images", f"{len(missing)} of {len(paths)} listed images are missing (first: "
                                       f"{missing[0]}): fix img_dir in PATHS_CATALOG or restore the files")
    if not read_images:
        return Finding(OK, "images", f"all {len(paths)} present in {img_dir}")
    problem = first_bad_image(paths, [(e["width"], e["height"]) for e in entries])
    if problem:
        return Finding(FAIL, "images", problem)
    return Finding(OK, "images", f"all {len(paths)} present and readable at their listed sizes")


def check_vg_dataset(files, class_counts=None, read_images=False):
    """Findings for the dataset ``files`` (a :class:`VGFiles`), in order; checking stops at the first failure.

    ``class_counts``: {config key: (which dictionary, the config's value)}, e.g.
    ``{"MODEL.ROI_BOX_HEAD.NUM_CLASSES": ("labels", 151)}``; the value includes background.
    ``read_images``: decode every image and compare its size with the list (minutes on the full VG
    the first time; then only the files changed since, see ``image_decode``).
    """
    arrays, findings = _read_h5(files.roidb_file)
    if arrays is None:
        return findings
    name = os.path.basename(files.roidb_file)
    dict_name = os.path.basename(files.dict_file)
    steps = (
        lambda: _check_shapes(name, arrays),
        lambda: _check_ranges(name, arrays),
    )
    for step in steps:
        findings.append(step())
        if findings[-1].verdict == FAIL:
            return findings
    info, failure = _load_dicts(files.dict_file)
    if failure:
        return findings + [failure]
    findings.append(_check_classes(name, dict_name, arrays, info, class_counts or {}))
    if findings[-1].verdict == FAIL:
        return findings
    entries, failure = _load_image_list(files.image_file, arrays["split"].shape[0])
    if failure:
        return findings + [failure]
    findings.append(_check_boxes(name, arrays, entries))
    if findings[-1].verdict == FAIL:
        return findings
    findings.append(_check_images(files.img_dir, entries, read_images))
    return findings
