"""Every image of a dataset decodes, checked once per file version: a bad file stops a run before training.

SGB's loader opens each image with ``Image.open(path).convert("RGB")`` when a batch first needs it,
so a corrupt or truncated file fails hours into a run, in a validation or an epoch's last batch.
``first_bad_image`` decodes every image up front: JPEGs in libjpeg's draft mode (scaled by 1/8 in
the DCT, so it still reads the whole entropy-coded stream, and a truncated or garbled file still
fails, at about half the cost of a full decode), other formats fully.

The images that decoded are remembered by (file name, size in bytes, mtime in ns) with their
width and height, so a second check stats each file and decodes none that is unchanged. The record
lives in ``$XDG_CACHE_HOME/sgg_plugins/decoded_images`` (else ``~/.cache/...``), one file per image
folder named by its real path's digest, not beside the dataset: datasets are often on shared or
read-only storage, and a per-user cache needs no write access to them. A cache that cannot be
written costs only the time of decoding again.
"""

import hashlib
import json
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor

# PIL releases the GIL while it decodes, so threads decode in parallel.
DECODE_THREADS = min(8, os.cpu_count() or 1)
DRAFT_SCALE = 8


def cache_file(img_dir):
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    digest = hashlib.sha1(os.path.realpath(img_dir).encode()).hexdigest()[:16]
    return os.path.join(root, "sgg_plugins", "decoded_images", f"{digest}.json")


def _read_cache(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):  # none yet, or a partial write: decode again
        return {}


def _write_cache(path, record):
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=os.path.dirname(path), delete=False, suffix=".tmp") as f:
            json.dump(record, f)
        os.replace(f.name, path)  # atomic: concurrent launchers never read half a file
    except OSError:
        pass  # a read-only home: the next check decodes again


def decoded_size(path):
    """(width, height) of the image at ``path`` after decoding all of it; raises what PIL raises."""
    from PIL import Image

    with Image.open(path) as image:
        size = image.size
        image.draft("RGB", (size[0] // DRAFT_SCALE, size[1] // DRAFT_SCALE))  # JPEG only; others ignore it
        image.load()
    return size


def _decode(path):
    try:
        return decoded_size(path), None
    except Exception as error:  # PIL raises many types for a broken file
        text = str(error).replace(f" {path!r}", "")  # PIL's "cannot identify image file '<path>'"
        return None, f"{type(error).__name__}: {text}"


def first_bad_image(paths, listed_sizes):
    """The first of ``paths`` (all in one folder) that does not decode, or whose decoded (width,
    height) is not its entry of ``listed_sizes``, as a line; None when every image is good."""
    record_path = cache_file(os.path.dirname(paths[0])) if paths else None
    known = _read_cache(record_path) if paths else {}
    versions = [(st.st_size, st.st_mtime_ns) for st in map(os.stat, paths)]
    sizes = {}
    to_decode = []
    for path, version in zip(paths, versions):
        entry = known.get(os.path.basename(path))
        if entry is not None and tuple(entry[:2]) == version:
            sizes[path] = tuple(entry[2:])
        else:
            to_decode.append(path)
    problems = {}
    with ThreadPoolExecutor(DECODE_THREADS) as pool:
        for path, (size, problem) in zip(to_decode, pool.map(_decode, to_decode)):
            if problem is None:
                sizes[path] = size
            else:
                problems[path] = problem
    if to_decode:
        # Merged: datasets that list different images of one folder share its record.
        _write_cache(record_path, {**known, **{os.path.basename(path): [*version, *sizes[path]]
                                               for path, version in zip(paths, versions) if path in sizes}})
    for path, listed in zip(paths, listed_sizes):
        if path in problems:
            return f"{path} cannot be read ({problems[path]}): restore it"
        if sizes[path] != tuple(listed):
            return (f"{path} is {sizes[path][0]}x{sizes[path][1]} but image_data.json says {listed[0]}x{listed[1]}: "
                    "boxes would be scaled wrongly")
    return None
