"""Head, body and tail: which predicates the report's head/body/tail mR@K averages over.

Predicates are grouped by their training counts (ranked into thirds by default, or by count
thresholds), from a ``--split-file``, or by the host's own split (SGTR's ``LONGTAIL_PART_DICT``).
"""

import json
from pathlib import Path

from .report_inputs import ReportError, relative_to

GROUPS = ("head", "body", "tail")
# The K whose per-predicate recall the groups average (and the per-predicate plot shows).
SPLIT_K = 100


def split_by_rank(counts, head_frac=1 / 3, tail_frac=1 / 3):
    """Group of each predicate: the ``round(n * head_frac)`` most frequent are head, the
    ``round(n * tail_frac)`` least frequent tail, the rest body. Ties keep predicate order."""
    for name, frac in (("--head-frac", head_frac), ("--tail-frac", tail_frac)):
        if not 0 <= frac <= 1:
            raise ReportError(f"{name} = {frac} must be in [0, 1]")
    if head_frac + tail_frac > 1:
        raise ReportError(f"--head-frac + --tail-frac = {head_frac + tail_frac} must not exceed 1")
    n = len(counts)
    n_head, n_tail = round(n * head_frac), round(n * tail_frac)
    order = sorted(range(n), key=lambda i: (-counts[i], i))
    groups = [None] * n
    for rank, predicate in enumerate(order):
        groups[predicate] = "head" if rank < n_head else "tail" if rank >= n - n_tail else "body"
    return groups


def split_by_counts(counts, head_above, tail_below):
    """Head: more than ``head_above`` training samples; tail: fewer than ``tail_below``; body: the rest."""
    if tail_below > head_above + 1:
        raise ReportError(f"--tail-below {tail_below} must not exceed --head-above {head_above} + 1")
    return ["head" if c > head_above else "tail" if c < tail_below else "body" for c in counts]


def read_split_file(path, names):
    """Groups from a JSON file: ``{"head": [...], "body": [...], "tail": [...]}`` with predicate
    names or 1-based predicate indices, or a list of ``"h"``/``"b"``/``"t"`` per predicate index
    (a leading ``null`` for background is allowed, as in SGTR's ``LONGTAIL_PART_DICT``)."""
    path = Path(path)
    if not path.is_file():
        raise ReportError(f"--split-file {path} does not exist")
    try:
        spec = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ReportError(f"--split-file {path} is not valid JSON: {error}") from error
    n = len(names)
    letters = {"h": "head", "b": "body", "t": "tail"}
    if isinstance(spec, list):
        if len(spec) == n + 1 and spec[0] in (None, ""):
            spec = spec[1:]
        if len(spec) != n or any(str(s).lower()[:1] not in letters for s in spec):
            raise ReportError(f"--split-file {path}: a list needs one of 'h', 'b', 't' for each of the {n} predicates")
        return [letters[str(s).lower()[:1]] for s in spec]
    if not isinstance(spec, dict) or set(spec) - set(GROUPS):
        raise ReportError(f"--split-file {path}: expected keys among {GROUPS} or a list of 'h'/'b'/'t'")
    groups = [None] * n
    for group, members in spec.items():
        for member in members:
            if isinstance(member, int) and 1 <= member <= n:
                index = member - 1
            elif member in names:
                index = names.index(member)
            else:
                raise ReportError(f"--split-file {path}: {member!r} is neither a predicate name nor an index in 1..{n}")
            if groups[index] is not None:
                raise ReportError(f"--split-file {path}: predicate {names[index]!r} is in two groups")
            groups[index] = group
    missing = [names[i] for i in range(n) if groups[i] is None]
    if missing:
        raise ReportError(f"--split-file {path}: predicates in no group: {', '.join(missing)}")
    return groups


def choose_groups(args, bench_dir, names, counts, counts_how, host_groups, host_note):
    """``(group of each predicate or None, the rule in words)`` from the report's options.

    An explicit option (``--split-file``, ``--head-above``/``--tail-below``, ``--head-frac``/
    ``--tail-frac``) wins; without one the host's own split (``host_groups``, described by
    ``host_note``) is used where it has one, else the predicates are ranked into thirds by their
    training ``counts``. Without counts there are no groups, and the rule says why (``counts_how``).
    """
    split_options = (args.split_file, args.head_above, args.tail_below, args.head_frac, args.tail_frac)
    groups, split_rule = None, f"not computed: {counts_how}"
    if host_groups is not None and all(option is None for option in split_options):
        groups, split_rule = host_groups, host_note
    elif counts is not None:
        head_frac = 1 / 3 if args.head_frac is None else args.head_frac
        tail_frac = 1 / 3 if args.tail_frac is None else args.tail_frac
        if args.split_file:
            groups = read_split_file(args.split_file, names)
            split_rule = f"groups from {relative_to(args.split_file, bench_dir)}"
        elif args.head_above is not None or args.tail_below is not None:
            if args.head_above is None or args.tail_below is None:
                raise ReportError("--head-above and --tail-below go together")
            groups = split_by_counts(counts, args.head_above, args.tail_below)
            split_rule = (f"head: more than {args.head_above} training samples; tail: fewer than "
                          f"{args.tail_below}; body: the rest")
        else:
            groups = split_by_rank(counts, head_frac, tail_frac)
            split_rule = (f"predicates ranked by training samples; head: the {round(len(counts) * head_frac)} "
                          f"most frequent ({head_frac:.3g} of {len(counts)}), tail: the "
                          f"{round(len(counts) * tail_frac)} least frequent ({tail_frac:.3g}), body: the rest")
        if host_note and host_groups is None:
            split_rule += f" ({host_note})"
    return groups, split_rule
