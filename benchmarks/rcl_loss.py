"""Cost of the relational contrastive loss alone (forward + backward) against a cross-entropy baseline.

The text bank has VG150's shape (150 objects, 50 predicates, D_t = 512, ``--pool`` training
triplets); relations draw their triplet uniformly from the pool, so nearly every relation of a batch
has its own triplet (the loss's worst case: U, the number of distinct triplets, is close to N).
Relation and object features are leaf tensors that need a gradient, so the model that would make
them is not counted. The baseline is a plain cross-entropy over the same relations: a linear
classifier D_rel -> 51 predicates, as the host's last relation layer, and ``F.cross_entropy``.

With ``--adapter attention`` the relations are spread over ``--images`` images (SGB's batch of
12), and the §3.2 adapters attend within each image over all its relations and objects.

    PYTHONPATH=. python3 benchmarks/rcl_loss.py [--relations 1024 4096 --dim 512 --level dual --adapter linear --device cpu]
"""
import argparse

import torch
from timing import median_ms
import torch.nn.functional as F

from sgg_plugins.regularizers.rcl import ADAPTERS, LEVELS, RelationalContrastiveLoss
from sgg_plugins.text.bank import TextEmbeddingBank

NUM_OBJ, NUM_PRED = 150, 50


def random_bank(num_triplets, text_dim, generator):
    def unit(*shape):
        return F.normalize(torch.randn(*shape, text_dim, generator=generator), dim=-1)

    labels = torch.stack([torch.randint(1, NUM_OBJ + 1, (num_triplets,), generator=generator),
                          torch.randint(1, NUM_PRED + 1, (num_triplets,), generator=generator),
                          torch.randint(1, NUM_OBJ + 1, (num_triplets,), generator=generator)], 1)
    labels = torch.unique(labels, dim=0)
    return TextEmbeddingBank(unit(NUM_OBJ + 1), unit(NUM_PRED + 1), unit(NUM_OBJ + 1, NUM_PRED + 1),
                             unit(NUM_PRED + 1, NUM_OBJ + 1), labels, unit(len(labels)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--relations", type=int, nargs="+", default=[1024, 4096])
    parser.add_argument("--dim", type=int, default=512, help="D_rel = D_obj = D_v = D_t")
    parser.add_argument("--level", default="dual", choices=LEVELS)
    parser.add_argument("--pool", type=int, default=20000, help="training triplets in the bank")
    parser.add_argument("--adapter", default="linear", choices=ADAPTERS)
    parser.add_argument("--images", type=int, default=12, help="images the relations belong to (attention adapter)")
    parser.add_argument("--objects", type=int, default=25, help="objects per image (attention adapter)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    generator = torch.Generator().manual_seed(0)
    bank = random_bank(args.pool, args.dim, generator).to(device)
    loss_module = RelationalContrastiveLoss(args.dim, args.dim, args.dim, embed_dim=args.dim, level=args.level,
                                            adapter=args.adapter)
    loss_module = loss_module.to(device)
    classifier = torch.nn.Linear(args.dim, NUM_PRED + 1).to(device)
    print(f"device {device}, {torch.get_num_threads()} CPU threads, level {args.level}, adapter {args.adapter}, D = {args.dim}, "
          f"bank of {bank.triplet_keys.numel()} triplets")

    for num_rel in args.relations:
        rows = torch.randint(bank.triplet_keys.numel(), (num_rel,), generator=generator)
        subj, pred, obj = bank.triplet_labels[rows.to(device)].unbind(1)
        rel_feats, subj_feats, obj_feats = (torch.randn(num_rel, args.dim, generator=generator).to(device)
                                            .requires_grad_() for _ in range(3))

        rel_image = (torch.arange(num_rel) * args.images // num_rel).to(device)
        subj_rows, obj_rows = (rel_image * args.objects + torch.randint(args.objects, (num_rel,), generator=generator)
                               .to(device) for _ in range(2))

        def rcl_step():
            loss_module(rel_feats, subj_feats, obj_feats, subj, pred, obj, bank, rel_image=rel_image,
                        subj_rows=subj_rows, obj_rows=obj_rows).backward()

        def cross_entropy_step():
            F.cross_entropy(classifier(rel_feats), pred).backward()

        rcl_ms = median_ms(rcl_step, args.repeats, device, warmup=2)
        ce_ms = median_ms(cross_entropy_step, args.repeats, device, warmup=2)
        distinct = torch.unique(bank.triplet_key(subj, pred, obj)).numel()
        print(f"N = {num_rel:5d} ({distinct} distinct triplets): RCL {rcl_ms:8.1f} ms, cross-entropy {ce_ms:6.2f} ms, "
              f"ratio {rcl_ms / ce_ms:6.1f}x")


if __name__ == "__main__":
    main()
