"""GloVe word vectors for RCL's semantic-aware sampling (seed 001 Eq. 7, ``MODEL.RCL.SAMPLING_EMBEDDINGS "glove"``).

RelCLIP ranks the negatives of a query "according to their semantic meaning (e.g., word2vec
embeddings (Pennington et al., 2014))", with e "word embeddings for the word tokens of
subject-predicate and predicate-object" (Eq. 7), and tunes ε = 0.7 on them (Table 6). The
reference is GloVe, so the default sampling embedding of a phrase is the mean of the GloVe vectors
of its word tokens, read from the same file the host reads for its object embeddings:
``GLOVE_DIR/glove.6B.<dim>d.pt`` (the host's cache of the parsed text: a tuple ``(word -> row,
[V, dim] tensor, dim)``) or ``GLOVE_DIR/glove.6B.<dim>d.txt`` (Stanford's text format, one word and
its ``dim`` numbers per line), ``dim`` being the host's ``MODEL.ROI_RELATION_HEAD.EMBED_DIM``.

Only the words of the class names are kept. A phrase's embedding is a mean over its tokens, so per
class the sum of its token vectors and its token count are stored; any phrase of classes
("subject predicate", "predicate object", the triplet, the predicate) is then a lookup, an add and
a division, vectorised over a batch of labels (:class:`WordVectorPhrases`). Nothing is read or
computed inside a training step.
"""
import logging
import os
import zlib

import torch

logger = logging.getLogger(__name__)

GLOVE_STEM = "glove.6B.{dim}d"


class GloveUnavailableError(FileNotFoundError):
    """The GloVe file for RCL's sampling embeddings is not in GLOVE_DIR."""


def glove_path(glove_dir, dim):
    """The host's GloVe file for ``dim`` in ``glove_dir``: the ``.pt`` cache first (as the host), else ``.txt``.

    Raises :class:`GloveUnavailableError` with one line naming GLOVE_DIR, what it holds, and the
    two ways out.
    """
    stem = os.path.join(glove_dir, GLOVE_STEM.format(dim=dim))
    for suffix in (".pt", ".txt"):
        if os.path.isfile(stem + suffix):
            return stem + suffix
    present = sorted(f for f in os.listdir(glove_dir) if f.startswith("glove")) if os.path.isdir(glove_dir) else None
    holds = ("does not exist" if present is None else
             f"holds {', '.join(present)}" if present else "holds no glove file")
    raise GloveUnavailableError(
        f"MODEL.RCL.SAMPLING_EMBEDDINGS glove needs {os.path.basename(stem)}.txt (or the host's .pt) in GLOVE_DIR "
        f"{glove_dir!r}, which {holds}: put Stanford's glove.6B.{dim}d.txt there (dim = MODEL.RCL.GLOVE_DIM, "
        f"or MODEL.ROI_RELATION_HEAD.EMBED_DIM when that is 0), or set MODEL.RCL.SAMPLING_EMBEDDINGS clip to rank negatives by CLIP "
        f"text embeddings instead.")


def tokens_of(phrase):
    """Word tokens of a class name as GloVe 6B spells them: lower case, split on spaces and underscores."""
    return phrase.lower().replace("_", " ").split()


def file_identity(path):
    """Name, size and a digest of the first MiB: tells GloVe files apart without hashing hundreds of MB."""
    with open(path, "rb") as handle:
        head = handle.read(1 << 20)
    return f"{os.path.basename(path)}:{os.path.getsize(path)}:{zlib.crc32(head):08x}"


def read_word_vectors(path, words):
    """{word: [dim] float tensor} for those of ``words`` the file holds, and the file's dim.

    ``.pt``: the host's ``(word -> row, [V, dim] tensor, dim)`` tuple. ``.txt``: streamed line by
    line, parsing only the lines of the requested words.
    """
    words = set(words)
    if path.endswith(".pt"):
        try:
            word_to_row, table, dim = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:
            raise ValueError(f"{path} is not the host's GloVe cache (word -> row, vectors, dim): "
                             f"{type(error).__name__}; delete it and let the host rebuild it from the .txt") from None
        return {w: table[word_to_row[w]].float() for w in words if w in word_to_row}, int(dim)
    found, dim = {}, None
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, 1):
            word, _, rest = line.partition(b" ")
            try:
                word = word.decode("utf-8")
            except UnicodeDecodeError:  # the host skips these too
                continue
            if dim is None:
                dim = len(rest.split())
            if word in words:
                values = rest.split()
                if len(values) != dim:
                    raise ValueError(f"{path} line {number}: {len(values)} numbers after {word!r}, expected {dim}")
                found[word] = torch.tensor([float(v) for v in values])
    if dim is None:
        raise ValueError(f"{path} is empty: expected one word and its vector per line (GloVe's text format)")
    return found, dim


def _stand_in_vector(word, dim):
    """A fixed random vector for a word GloVe lacks (the host gives such words N(0, 1) vectors too);
    seeded by the word, so the same word always gets the same vector and two phrases that share it
    stay similar."""
    generator = torch.Generator().manual_seed(zlib.crc32(word.encode()))
    return torch.randn(dim, generator=generator)


class WordVectorPhrases:
    """Mean word vectors of phrases made of class names, by label (index 0 = background, no tokens).

    Args:
        obj_sums, pred_sums: [O+1, D], [P+1, D] sums of each class name's token vectors.
        obj_counts, pred_counts: [O+1], [P+1] token counts.
        source: what the vectors are (logged, and kept with the bank).
    """

    def __init__(self, obj_sums, obj_counts, pred_sums, pred_counts, source=""):
        self.obj_sums, self.obj_counts = obj_sums.float(), obj_counts.float()
        self.pred_sums, self.pred_counts = pred_sums.float(), pred_counts.float()
        self.source = source
        self.dim = obj_sums.shape[1]

    @classmethod
    def from_classes(cls, obj_classes, pred_classes, vectors, dim, source=""):
        """Class lists (entry 0 the background) and {word: vector} -> per-class sums and counts."""
        missing = sorted({t for name in list(obj_classes[1:]) + list(pred_classes[1:]) for t in tokens_of(name)}
                         - set(vectors))
        if missing:
            logger.warning("RCL sampling embeddings: %d word(s) of the class names are not in %s and get fixed "
                           "random vectors: %s", len(missing), source or "the word vectors", ", ".join(missing))

        def table(classes):
            sums, counts = torch.zeros(len(classes), dim), torch.zeros(len(classes))
            for index, name in enumerate(classes[1:], 1):
                tokens = tokens_of(name)
                for token in tokens:
                    sums[index] += vectors[token] if token in vectors else _stand_in_vector(token, dim)
                counts[index] = len(tokens)
            return sums, counts

        return cls(*table(list(obj_classes)), *table(list(pred_classes)), source=source)

    def to(self, device):
        for name in ("obj_sums", "obj_counts", "pred_sums", "pred_counts"):
            setattr(self, name, getattr(self, name).to(device))
        return self

    def phrase(self, subj=None, pred=None, obj=None):
        """[N, D] mean token vector of the phrase formed by the given label tensors (in that order:
        only membership matters for a mean)."""
        parts = [(self.obj_sums, self.obj_counts, subj), (self.pred_sums, self.pred_counts, pred),
                 (self.obj_sums, self.obj_counts, obj)]
        total = count = 0
        for sums, counts, labels in parts:
            if labels is not None:
                total = total + sums[labels]
                count = count + counts[labels]
        return total / count.clamp(min=1).unsqueeze(-1)

    def state_dict(self):
        return {"obj_sums": self.obj_sums.cpu(), "obj_counts": self.obj_counts.cpu(),
                "pred_sums": self.pred_sums.cpu(), "pred_counts": self.pred_counts.cpu(), "source": self.source}


def glove_phrases(obj_classes, pred_classes, glove_dir, dim):
    """:class:`WordVectorPhrases` of these class lists from the host's GloVe file in ``glove_dir``."""
    path = glove_path(glove_dir, dim)
    words = {t for name in list(obj_classes[1:]) + list(pred_classes[1:]) for t in tokens_of(name)}
    vectors, file_dim = read_word_vectors(path, words)
    if file_dim != dim:
        raise ValueError(f"{path} holds {file_dim}-d vectors, its name says {dim}-d: a renamed or truncated file?")
    phrases = WordVectorPhrases.from_classes(obj_classes, pred_classes, vectors, dim, source=file_identity(path))
    logger.info("RCL sampling embeddings: GloVe %s (%d of %d class-name words found)", path, len(vectors), len(words))
    return phrases
