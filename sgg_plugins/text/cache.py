"""Text bank cache files: identities of the weights, file names keyed by a digest, atomic writes.

Shared by RCL's bank (:mod:`sgg_plugins.text.bank_builder`) and MODEL.CLIPMATCH's candidates
(:mod:`sgg_plugins.text.candidates`): a cache key holds everything that changes the numbers, a local
checkpoint or model folder being identified by its content.
"""
import hashlib
import json
import os
import re

import torch

from .weights import LOCAL_DIR, SENTENCE_TRANSFORMERS


def folder_identity(folder):
    """The content of every file under ``folder``, with its relative path (a sentence-transformers
    model keeps its pooling in a subfolder)."""
    paths = sorted(os.path.relpath(os.path.join(root, name), folder)
                   for root, _, names in os.walk(folder) for name in names)
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.encode())
        digest.update(weights_identity(os.path.join(folder, path)).encode())
    return f"dir-sha256:{digest.hexdigest()}"


def weights_identity(pretrained, model=""):
    """A local checkpoint or model folder is identified by its content (portable across machines),
    a tag or hub name by name."""
    if model.startswith(SENTENCE_TRANSFORMERS):
        source = model[len(SENTENCE_TRANSFORMERS):]
        return folder_identity(source) if os.path.isdir(source) else f"name:{source}"
    if model.startswith(LOCAL_DIR):
        return folder_identity(model[len(LOCAL_DIR):])
    if os.path.isfile(pretrained):
        digest = hashlib.sha256()
        with open(pretrained, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
        return f"file-sha256:{digest.hexdigest()}"
    return f"tag:{pretrained}"


def _key_digest(key):
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def save_atomically(state, path):
    """torch.save to a temporary file, then rename: a half-written file is never left under ``path``
    (several processes may compute the same bank at once)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    torch.save(state, tmp)
    os.replace(tmp, path)


def default_cache_file(cache_dir, stem, model, pretrained, key):
    """``<cache_dir>/<stem>_<model>_<weights>_<digest>.pt``: one file per key, the digest of the whole key."""
    label = f"{model}_{os.path.basename(str(pretrained))}"
    for schema in (LOCAL_DIR, SENTENCE_TRANSFORMERS):
        if model.startswith(schema):
            # The model is the folder or hub name alone (no weights key); its last part is enough
            # for a reader, since the digest tells folders apart, and a full path can overrun a file name.
            label = f"{schema[:-1]}_{os.path.basename(model[len(schema):].rstrip(os.sep))}"
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", label)
    return os.path.join(cache_dir or default_cache_dir(), f"{stem}_{safe}_{_key_digest(key)[:16]}.pt")


def unfit_parts(stored, key, set_part, requested, held):
    """Why a cached bank made for ``stored`` does not serve ``key``: the key parts that differ (the
    hash ``set_part`` of the requested set aside: a file holding more serves fewer) and how many of
    the ``requested`` keys the file's ``held`` keys lack."""
    changed = [part for part in key if part != set_part and stored.get(part) != key[part]]
    return changed, int((~torch.isin(requested, held.cpu())).sum())


def default_cache_dir():
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, "sgg_plugins", "text_embeddings")
