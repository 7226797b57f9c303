"""One-time cost of MODEL.CLIPMATCH's candidate bank: CLIP text-encoding throughput and file size.

The bank holds K * p + 1 texts (K class pairs with a training relation, p predicates, the null
text). This times ``encode_texts`` (the bank machinery's batched encoder) on ``--sample`` candidate
texts with the architecture of ``--clip-model`` (random weights: the cost does not depend on
them, and no download is needed) and extrapolates to ``--class-pairs``.

    PYTHONPATH=. python3 benchmarks/clipmatch_bank_cost.py [--class-pairs 1000 5000 --device cpu]
"""
import argparse
import time

import torch

from sgg_plugins.text.candidates import candidate_texts
from sgg_plugins.text.encoders import encode_texts


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip-model", default="ViT-B-32")
    parser.add_argument("--sample", type=int, default=1024, help="texts actually encoded")
    parser.add_argument("--class-pairs", type=int, nargs="+", default=[1000, 5000, 22350])
    parser.add_argument("--predicates", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    import open_clip

    clip = open_clip.create_model(args.clip_model, pretrained=None, device=args.device).eval()
    tokenizer = open_clip.get_tokenizer(args.clip_model)
    objects = ["__background__"] + [f"object{i}" for i in range(1, 151)]
    predicates = ["__background__"] + [f"predicate{i}" for i in range(1, args.predicates + 1)]
    pairs = torch.stack([torch.arange(1, 151).repeat_interleave(150), torch.arange(1, 151).repeat(150)], 1)
    texts = candidate_texts(objects, predicates, pairs[:args.sample // args.predicates + 1])[:args.sample]
    encode_texts(clip, tokenizer, texts[:args.batch_size], device=args.device, batch_size=args.batch_size)  # warm-up
    start = time.perf_counter()
    embeddings = encode_texts(clip, tokenizer, texts, device=args.device, batch_size=args.batch_size)
    rate = len(texts) / (time.perf_counter() - start)
    print(f"{args.clip_model} on {args.device} ({torch.get_num_threads()} threads): {rate:.0f} texts/s")
    for num_pairs in args.class_pairs:
        num_texts = num_pairs * args.predicates + 1
        size_mb = num_texts * embeddings.shape[1] * 4 / 2**20
        print(f"K = {num_pairs:6d} class pairs: {num_texts:8d} texts, {num_texts / rate / 60:6.1f} min once, "
              f"{size_mb:7.0f} MiB (float32, D = {embeddings.shape[1]})")


if __name__ == "__main__":
    main()
