"""Reading a dataset in SGB's Visual Genome layout: its class lists (VG-SGG-dicts.json) and the
(subject, predicate, object) labels of its training relations (VG-SGG.h5).

Index convention (SGB's): label 0 is the background; class lists are indexed by label.
"""
import json

import torch


def read_vg_classes(dict_file):
    """SGB's VG-SGG-dicts.json -> (obj_classes, pred_classes), indexed by label, '__background__' at 0."""
    try:
        with open(dict_file) as handle:
            info = json.load(handle)
    except FileNotFoundError:
        raise FileNotFoundError(f"dict file not found: {dict_file}") from None
    lists = []
    for field in ("idx_to_label", "idx_to_predicate"):
        if field not in info:
            raise ValueError(f"{dict_file} has no {field!r}: is it SGB's VG-SGG-dicts.json?")
        mapping = {int(index): name for index, name in info[field].items()}
        if sorted(mapping) != list(range(1, len(mapping) + 1)):
            raise ValueError(f"{dict_file}: {field} must number its entries 1..N without gaps")
        lists.append(["__background__"] + [mapping[i] for i in range(1, len(mapping) + 1)])
    return lists[0], lists[1]


def read_vg_training_triplets(roidb_file, num_val_im=0, num_im=-1):
    """[T, 3] (subject, predicate, object) labels of every relation of the training split, as the file holds them.

    Every relation counts, including those between non-overlapping boxes (the host's frequency
    statistics drop them) and duplicates of a pair (the host samples one per pair and step).
    ``num_val_im = 0`` (the default, for the text bank) keeps all of split 0, including the images
    SGB carves out for validation, so the bank covers whatever training can meet. With the host's
    ``num_val_im`` (5000 unless the dataset says otherwise) and ``num_im``, exactly the images of
    SGB's training set (``load_graphs``: split 0, with boxes and relations, the first ``num_val_im``
    of them left to validation).
    """
    import h5py
    import numpy as np

    try:
        h5 = h5py.File(roidb_file, "r")
    except FileNotFoundError:
        raise FileNotFoundError(f"roidb file not found: {roidb_file}") from None
    except OSError as error:
        raise ValueError(f"{roidb_file} is not a readable HDF5 file ({error}): truncated, or not SGB's VG-SGG.h5?") from None
    with h5:
        missing = [f for f in ("split", "img_to_first_box", "img_to_first_rel", "img_to_last_rel", "relationships",
                               "predicates", "labels") if f not in h5]
        if missing:
            raise ValueError(f"{roidb_file} lacks {', '.join(missing)}: is it SGB's VG-SGG.h5?")
        train = (h5["split"][:] == 0) & (h5["img_to_first_box"][:] >= 0) & (h5["img_to_first_rel"][:] >= 0)
        images = np.flatnonzero(train)
        if num_im > -1:
            images = images[:num_im]
        images = images[num_val_im:]
        first, last = h5["img_to_first_rel"][:][images], h5["img_to_last_rel"][:][images]
        pairs, predicates, labels = h5["relationships"][:], h5["predicates"][:, 0], h5["labels"][:, 0]
    if len(pairs) and (pairs.min() < 0 or pairs.max() >= len(labels)):
        raise ValueError(f"{roidb_file}: relationships index boxes outside 0..{len(labels) - 1} "
                         f"(found {pairs.min()}..{pairs.max()}): the file is inconsistent, recreate it")
    # Mark every relation index inside a training image's [first, last] range, without a loop.
    marks = np.zeros(len(predicates) + 1, dtype=np.int64)
    np.add.at(marks, first, 1)
    np.add.at(marks, last + 1, -1)
    in_train = np.cumsum(marks)[:-1] > 0
    triplets = np.stack([labels[pairs[in_train, 0]], predicates[in_train], labels[pairs[in_train, 1]]], 1)
    return torch.from_numpy(triplets.astype(np.int64))


def predicate_training_counts(roidb_file, num_predicates, num_val_im=5000, num_im=-1):
    """[P+1] long: how many relations of each predicate SGB's training set holds (index 0, background, is 0).

    From the dataset file (:func:`read_vg_training_triplets` with the host's ``num_val_im``), so
    relations between non-overlapping boxes count: the host's frequency statistics
    (``fg_matrix``) leave them out and would put whole predicates in the tail with 0 samples.
    """
    predicates = read_vg_training_triplets(roidb_file, num_val_im=num_val_im, num_im=num_im)[:, 1]
    if predicates.numel() and (predicates.min() < 1 or predicates.max() > num_predicates):
        raise ValueError(f"{roidb_file}: predicate labels {int(predicates.min())}..{int(predicates.max())} do not fit "
                         f"{num_predicates} predicates (MODEL.ROI_RELATION_HEAD.NUM_CLASSES - 1)")
    return torch.bincount(predicates, minlength=num_predicates + 1)
