"""The training data's own files, read through the host's PATHS_CATALOG.

The objectives that embed texts read the training split as the dataset file holds it (SGB's
VG-SGG.h5 and dict file), never the host's frequency statistics, which SGB builds with
``filter_non_overlap=True`` and so drop the relations between non-overlapping boxes. The preflight
reads the same catalog entries to check the files before the host starts. This module imports no
predictor, so objectives and preflight both depend on it without a cycle.
"""

import os

import torch

from ...data.vg_check import VGFiles
from ...text.vg_files import read_vg_classes, read_vg_training_triplets


class PreflightError(ValueError):
    """Bad input found before the host starts; the message is the one line to show."""


def catalog_datasets(cfg, names):
    """{name: VGFiles} for the Visual Genome-format datasets among ``names``, from cfg.PATHS_CATALOG."""
    from maskrcnn_benchmark.utils.imports import import_file

    if not os.path.isfile(cfg.PATHS_CATALOG):
        raise PreflightError(f"PATHS_CATALOG {cfg.PATHS_CATALOG} does not exist")
    catalog = import_file("maskrcnn_benchmark.config.paths_catalog", cfg.PATHS_CATALOG, True).DatasetCatalog
    found = {}
    for name in dict.fromkeys(names):
        try:
            entry = catalog.get(name, cfg)
        except Exception as error:  # catalogs signal an unknown name with any exception (the stock one asserts)
            raise PreflightError(f"dataset {name} is not served by PATHS_CATALOG {cfg.PATHS_CATALOG} "
                                 f"({type(error).__name__}: {error})") from None
        args = entry.get("args", {})
        if entry.get("factory") == "VGDataset" and {"roidb_file", "dict_file", "image_file", "img_dir"} <= set(args):
            found[name] = VGFiles.from_catalog_args(args)
    return found


def training_text_sources(config, node="MODEL.RCL"):
    """(obj_classes, pred_classes, [T, 3] triplets) of every training dataset named in ``config``.

    ``node`` (the objective that reads them) names the reader in the errors."""
    names = list(config.DATASETS.TRAIN)
    found = catalog_datasets(config, names)
    if len(found) != len(set(names)):
        missing = [n for n in names if n not in found]
        raise ValueError(f"{node} reads its triplets from the training dataset's VG-SGG.h5 and dict file, but "
                         f"DATASETS.TRAIN {', '.join(missing)} is not a Visual Genome-format dataset (roidb_file, "
                         f"dict_file) in PATHS_CATALOG {config.PATHS_CATALOG}")
    files = list(found.values())
    obj_classes, pred_classes = read_vg_classes(files[0].dict_file)
    for other in files[1:]:
        if read_vg_classes(other.dict_file) != (obj_classes, pred_classes):
            raise ValueError(f"{node}: the training datasets' dict files {files[0].dict_file} and "
                             f"{other.dict_file} list different classes")
    triplets = torch.cat([read_vg_training_triplets(f.roidb_file) for f in files])
    return obj_classes, pred_classes, triplets
