"""Run-time data shims for SGB: datasets smaller than Visual Genome, and GloVe without a download.

``install_data_shims()`` runs after the compatibility shims and before training. It replaces five
attributes of the imported host, each a narrow wrapper that hands over to the host's own function
whenever the host's assumptions hold, so that the real Visual Genome and a real GloVe file behave
exactly as before. ``uninstall_data_shims()`` puts the originals back.

In ``maskrcnn_benchmark.data.datasets.visual_genome``:

- ``load_image_filenames``: the host asserts that the image list has exactly 108,073 usable
  images (the full VG-150 split). For a list with fewer entries (a synthetic dataset, a VG subset)
  the wrapper lists the images itself, with the host's pairing rules (entries in file order,
  ``<img_dir>/<image_id>.jpg``, the four corrupted VG file names skipped), and requires every
  listed image to exist: the host pairs images with h5 rows by position, so a missing file would
  silently shift every later image onto the wrong boxes. A full-size list goes to the host.
- ``VGDataset.__init__`` records the dataset's ``num_val_im`` on the instance (the host keeps it
  only as a local), for the statistics below.
- ``VGDataset.get_statistics``: the host computes the frequency statistics (``fg_matrix``,
  ``pred_dist``: the frequency bias, and the predicate counts) on a training split rebuilt with a
  hard-coded ``num_val_im=5000``; on a dataset with fewer training images that split is empty and
  the statistics are all background. For such a dataset the wrapper runs the host's own
  computation with the validation size the catalog gave the training dataset.

In ``maskrcnn_benchmark.modeling.roi_heads.relation_head.utils_motifs``:

- ``load_word_vectors``: with ``GLOVE_DIR/glove.6B.<dim>d.pt`` or ``.txt`` present, the host's
  loader reads it. Without one the host would download the 800 MB GloVe archive; the wrapper
  instead gives every word a fixed vector drawn from a standard normal generator seeded by a hash
  of the word (the host itself uses standard normal vectors for words GloVe lacks), and says so
  once per directory and size. The run is then deterministic but the object embeddings carry no
  word semantics.

In ``maskrcnn_benchmark.data.samplers.grouped_batch_sampler``:

- ``GroupedBatchSampler._prepare_batches``: the host splits each aspect-ratio group's sampled
  indices into batches and reads every batch's first element. Since PyTorch 1.x, splitting an empty
  tensor yields one empty piece, so a group with no image in this process's share (a small
  validation set split across ``torchrun`` ranks) fails with an IndexError. When a distributed
  sampler leaves a group empty, the wrapper hides that group from the host's computation for the
  call; otherwise the host's method runs as is.

The wrappers replace module attributes rather than host files: the host's functions look these
names up at call time, so every caller sees the wrapper, and the originals stay reachable.
"""

import functools
import inspect
import json
import logging
import os
import zlib

import torch

logger = logging.getLogger("sgg_plugins")

FULL_VG_USABLE_IMAGES = 108073  # the count the host asserts: VG-150's 108,077 images minus 4 corrupted
HOST_SKIPPED_FILES = frozenset({"1592.jpg", "1722.jpg", "4616.jpg", "4617.jpg"})  # corrupted in VG
HOST_STATISTICS_VAL_IMAGES = 5000  # the num_val_im the host hard-codes when computing statistics

# (module, attribute name, original) for every attribute replaced, to undo them
_replaced = []
_logged = set()


def _log_once(key, message, *args, level=logging.INFO):
    if key not in _logged:
        _logged.add(key)
        logger.log(level, message, *args)


@functools.lru_cache(maxsize=16)
def _image_entries(image_file, mtime_ns, size):
    """The entries of an image_data.json (cached by path, modification time and size)."""
    with open(image_file) as f:
        return json.load(f)


def _read_image_entries(image_file):
    if not os.path.isfile(image_file):
        raise FileNotFoundError(
            f"image list {image_file} not found: check the image_file path of the dataset in "
            "cfg.PATHS_CATALOG")
    stat = os.stat(image_file)
    return _image_entries(os.path.abspath(image_file), stat.st_mtime_ns, stat.st_size)


def is_full_visual_genome(image_file):
    """Whether ``image_file`` lists at least the 108,073 usable images of the full VG-150 split."""
    entries = _read_image_entries(image_file)
    usable = sum(f"{entry['image_id']}.jpg" not in HOST_SKIPPED_FILES for entry in entries)
    return usable >= FULL_VG_USABLE_IMAGES


def _image_filenames_any_count(original):
    @functools.wraps(original)
    def load_image_filenames(img_dir, image_file):
        if is_full_visual_genome(image_file):
            return original(img_dir, image_file)
        entries = [e for e in _read_image_entries(image_file) if f"{e['image_id']}.jpg" not in HOST_SKIPPED_FILES]
        filenames = [os.path.join(img_dir, f"{e['image_id']}.jpg") for e in entries]
        missing = [name for name in filenames if not os.path.exists(name)]
        if missing:
            raise FileNotFoundError(
                f"{len(missing)} of the {len(filenames)} images listed in {image_file} are missing "
                f"(first: {missing[0]}). SGB pairs images with the h5 rows by position, so every "
                "listed image must exist: regenerate the dataset or fix img_dir in cfg.PATHS_CATALOG")
        _log_once(("images", image_file),
                  "sgg-plugins data: %s lists %d images, not the full Visual Genome: SGB's fixed "
                  "108,073-image check is skipped for it", image_file, len(filenames))
        return filenames, [dict(e) for e in entries]

    load_image_filenames.sgg_plugins_original = original
    return load_image_filenames


def _recording_val_count(original_init):
    signature = inspect.signature(original_init)

    @functools.wraps(original_init)
    def __init__(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        self.sgg_plugins_num_val_im = bound.arguments["num_val_im"]

    __init__.sgg_plugins_original = original_init
    return __init__


def _statistics_with_own_val_count(original, visual_genome):
    @functools.wraps(original)
    def get_statistics(self):
        num_val_im = getattr(self, "sgg_plugins_num_val_im", HOST_STATISTICS_VAL_IMAGES)
        if is_full_visual_genome(self.image_file) or num_val_im == HOST_STATISTICS_VAL_IMAGES:
            return original(self)
        _log_once(("statistics", self.roidb_file),
                  "sgg-plugins data: computing the frequency statistics of %s with num_val_im=%d "
                  "(the dataset's own validation size) instead of SGB's fixed 5000",
                  self.roidb_file, num_val_im)
        # The host's get_VG_statistics builds its training split through the module's VGDataset
        # name, with num_val_im=5000 written in the call: swap that name, for this call only, for
        # a constructor that passes this dataset's value instead.
        host_class = visual_genome.VGDataset

        def with_own_val_count(**kwargs):
            return host_class(**dict(kwargs, num_val_im=num_val_im))

        visual_genome.VGDataset = with_own_val_count
        try:
            return original(self)
        finally:
            visual_genome.VGDataset = host_class

    get_statistics.sgg_plugins_original = original
    return get_statistics


class HashedWordVectors:
    """Stands in for GloVe in the host's ``obj_edge_vectors``: a fixed random vector for every word.

    The host reads word vectors as ``index = words.get(word)`` then ``table[index]``; this object is
    both: a word is its own index, and its vector is drawn from a standard normal generator seeded
    by the CRC-32 of the word, so it is the same in every run and every process.
    """

    def __init__(self, dim):
        self.dim = dim

    def get(self, word, default=None):
        return word

    def __getitem__(self, word):
        generator = torch.Generator().manual_seed(zlib.crc32(word.encode("utf-8")))
        return torch.randn(self.dim, generator=generator)


def _word_vectors_without_download(original):
    @functools.wraps(original)
    def load_word_vectors(root, wv_type, dim):
        dim_name = f"{dim}d" if isinstance(dim, int) else str(dim)
        stem = os.path.join(root, f"{wv_type}.{dim_name}")
        if os.path.isfile(stem + ".pt") or os.path.isfile(stem + ".txt"):
            return original(root, wv_type, dim)
        size = int(dim_name.rstrip("d"))
        _log_once(("glove", stem),
                  "sgg-plugins data: no word vectors at %s.pt or %s.txt; not downloading them: object "
                  "embeddings use fixed random vectors seeded by each word (deterministic, without "
                  "word semantics). Put %s.txt or .pt in GLOVE_DIR to use GloVe.",
                  stem, stem, os.path.basename(stem), level=logging.WARNING)
        table = HashedWordVectors(size)
        return table, table, size

    load_word_vectors.sgg_plugins_original = original
    return load_word_vectors


def _groups_with_sampled_images(original):
    @functools.wraps(original)
    def _prepare_batches(self):
        if not hasattr(self.sampler, "num_replicas"):
            return original(self)  # a sampler over the whole dataset: every group has images
        # The host's distributed sampler is deterministic for an epoch: listing it here gives the
        # same indices as the host's own listing inside the call.
        sampled = torch.as_tensor(list(self.sampler), dtype=torch.int64)
        all_groups = self.groups
        self.groups = all_groups[torch.isin(all_groups, self.group_ids[sampled])]
        try:
            return original(self)
        finally:
            self.groups = all_groups

    _prepare_batches.sgg_plugins_original = original
    return _prepare_batches


def _replace(owner, name, wrapper_factory, *args):
    original = getattr(owner, name)
    if getattr(original, "sgg_plugins_original", None) is not None:
        return  # already installed
    setattr(owner, name, wrapper_factory(original, *args))
    _replaced.append((owner, name, original))


def install_data_shims():
    """Install the wrappers described in the module docstring into the imported host. Idempotent."""
    from maskrcnn_benchmark.data.datasets import visual_genome
    from maskrcnn_benchmark.data.samplers import grouped_batch_sampler
    from maskrcnn_benchmark.modeling.roi_heads.relation_head import utils_motifs

    _replace(visual_genome, "load_image_filenames", _image_filenames_any_count)
    _replace(visual_genome.VGDataset, "__init__", _recording_val_count)
    _replace(visual_genome.VGDataset, "get_statistics", _statistics_with_own_val_count, visual_genome)
    _replace(utils_motifs, "load_word_vectors", _word_vectors_without_download)
    _replace(grouped_batch_sampler.GroupedBatchSampler, "_prepare_batches", _groups_with_sampled_images)


def uninstall_data_shims():
    """Put back every host attribute ``install_data_shims`` replaced."""
    while _replaced:
        owner, name, original = _replaced.pop()
        setattr(owner, name, original)
    _logged.clear()
