"""Cost of the CLIP predicate-matching loss alone (head, table, two-way cross entropy; forward +
backward) against a cross-entropy baseline, at Visual Genome's shape.

The bank has VG-150/50's shape (``--class-pairs`` (subject, object) class pairs x 50 predicates + the
null text, D_t = 512). A batch is ``--pairs`` sampled pairs of which ``--foreground`` carry a
relation (SGB samples up to 256 pairs per image, VG has about six annotated relations per image):
the table has a row per pair and p columns per distinct foreground class pair plus the null text.
The relation representation is a leaf tensor (the model that makes it is not counted); the baseline
is the host's last relation layer (D_rel -> 51) and ``F.cross_entropy`` over the same pairs.

    PYTHONPATH=. python3 benchmarks/clipmatch_loss.py [--pairs 768 3072 --foreground 18 72 --device cpu]
"""
import argparse

import torch
import torch.nn.functional as F
from timing import median_ms

from sgg_plugins.regularizers.clipmatch import PredicateMatchingLoss
from sgg_plugins.text.candidates import CandidateTextBank

NUM_OBJ, NUM_PRED = 150, 50


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, nargs="+", default=[768, 3072], help="sampled pairs per batch")
    parser.add_argument("--foreground", type=int, nargs="+", default=[18, 72], help="foreground pairs, per --pairs")
    parser.add_argument("--rel-dim", type=int, default=4096, help="the host's relation representation (stock: 4096)")
    parser.add_argument("--text-dim", type=int, default=512)
    parser.add_argument("--class-pairs", type=int, default=2000,
                        help="class pairs in the bank (its size only changes memory, not the time of a step)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads (0: torch's default); 1 on a busy shared machine, where "
                             "threads contending with other processes make every op slower")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if len(args.foreground) != len(args.pairs):
        parser.error("give one --foreground count per --pairs count")
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    keys = torch.randperm(NUM_OBJ * NUM_OBJ, generator=g)[:args.class_pairs]
    class_pairs = torch.stack([keys // NUM_OBJ + 1, keys % NUM_OBJ + 1], 1)
    bank = CandidateTextBank(class_pairs, F.normalize(torch.randn(len(class_pairs), NUM_PRED, args.text_dim, generator=g), dim=-1),
                             F.normalize(torch.randn(args.text_dim, generator=g), dim=0), NUM_OBJ).to(device)
    loss = PredicateMatchingLoss(args.rel_dim, args.text_dim).to(device)
    classifier = torch.nn.Linear(args.rel_dim, NUM_PRED + 1).to(device)
    print(f"device {device}, {torch.get_num_threads()} CPU threads, D_rel {args.rel_dim}, D_t {args.text_dim}, "
          f"bank {bank.num_pairs} class pairs x {NUM_PRED} + 1 = {bank.table.shape[0]} texts "
          f"({bank.table.numel() * 4 / 2**20:.0f} MiB)")
    for num_pairs, num_fg in zip(args.pairs, args.foreground):
        fg_rows = torch.randint(bank.num_pairs, (num_fg,), generator=g)
        subj = torch.randint(1, NUM_OBJ + 1, (num_pairs,), generator=g)
        obj = torch.randint(1, NUM_OBJ + 1, (num_pairs,), generator=g)
        subj[:num_fg], obj[:num_fg] = class_pairs[fg_rows].unbind(1)
        pred = torch.zeros(num_pairs, dtype=torch.long)
        pred[:num_fg] = torch.randint(1, NUM_PRED + 1, (num_fg,), generator=g)
        subj, pred, obj = subj.to(device), pred.to(device), obj.to(device)
        relation = torch.randn(num_pairs, args.rel_dim, generator=g).to(device).requires_grad_()
        _, _, columns = loss.table(subj, pred, obj, bank)

        def matching_step():
            loss(relation, subj, pred, obj, bank).backward()

        def cross_entropy_step():
            F.cross_entropy(classifier(relation), pred).backward()

        match_ms = median_ms(matching_step, args.repeats, device)
        ce_ms = median_ms(cross_entropy_step, args.repeats, device)
        print(f"{num_pairs:5d} pairs, {num_fg:3d} foreground, table {num_pairs} x {columns.numel()}: "
              f"CLIPMATCH {match_ms:8.1f} ms, cross-entropy {ce_ms:6.2f} ms, ratio {match_ms / ce_ms:6.1f}x")


if __name__ == "__main__":
    main()
