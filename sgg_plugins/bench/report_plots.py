"""The report's figures: per-predicate R@K as grouped bars, and every loss the host logged.

matplotlib is imported inside the functions that draw, with the Agg backend (no display needed).
"""

import math

from .head_body_tail import SPLIT_K
from .outputs import host_outputs

PNG_DPI = 120


def loss_log_period(report):
    """The iteration step between the host's loss log lines, from the recorded curves (or None)."""
    steps = {b[0] - a[0] for by_seed in report["losses"].values() for curves in by_seed.values()
             for points in curves.values() for a, b in zip(points, points[1:])}
    return min(steps) if steps else None


def plot_per_predicate(report, path):
    """Grouped bars: per predicate (most frequent first) one bar per variant, mean ± std over seeds.

    Predicates are categories, so nothing joins them; dotted lines and labels mark head/body/tail.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    predicates = report["predicates"]
    has_counts = predicates[0]["train_count"] is not None
    order = sorted(range(len(predicates)), key=lambda i: (-(predicates[i]["train_count"] or 0), i))
    variants = report["variants"]
    bar_width = 0.8 / len(variants)
    fig, (ax_count, ax) = plt.subplots(2, 1, figsize=(max(8.0, 0.22 * len(order) * (1 + len(variants))), 6.5),
                                       sharex=True, gridspec_kw={"height_ratios": [1, 3]})
    x = list(range(len(order)))
    if has_counts:
        ax_count.bar(x, [predicates[i]["train_count"] for i in order], color="0.6", width=0.8)
        ax_count.set_yscale("log")
        ax_count.set_ylabel("train samples")
    else:
        ax_count.set_axis_off()
    for j, variant in enumerate(variants):
        entries = [predicates[i][f"R@{SPLIT_K}"][variant] for i in order]
        positions = [xi + (j - (len(variants) - 1) / 2) * bar_width for xi in x]
        spread = [100 * e["std"] if e["std"] is not None else 0 for e in entries]
        ax.bar(positions, [100 * e["mean"] if e["mean"] is not None else 0 for e in entries], width=bar_width,
               yerr=spread if any(e["std"] is not None for e in entries) else None, capsize=1.5,
               error_kw={"elinewidth": 0.7}, label=variant, hatch="//" if variant == report["baseline"] else None,
               edgecolor="white", linewidth=0.3)
    groups = [predicates[i]["group"] for i in order]
    if groups[0] is not None:
        starts = [0] + [k for k in range(1, len(groups)) if groups[k] != groups[k - 1]] + [len(groups)]
        for a, b in zip(starts, starts[1:]):
            if a:
                for axis in (ax, ax_count):
                    axis.axvline(a - 0.5, color="k", linewidth=0.8, linestyle=":")
            ax.text((a + b - 1) / 2, 1.01, groups[a], transform=ax.get_xaxis_transform(), ha="center",
                    va="bottom", fontsize=9)
    ax.set_ylabel(f"R@{SPLIT_K} per predicate (%)")
    ax.set_ylim(0, 105)
    ax.set_xticks(x)
    ax.set_xticklabels([predicates[i]["name"] for i in order], rotation=90, fontsize=8)
    ax.set_xlabel("predicates, most frequent in training first" if has_counts else "predicates (no training counts)")
    ax.legend(fontsize=8, ncol=len(variants), loc="upper right")
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    fig.suptitle(f"{report['mode']}: per-predicate R@{SPLIT_K}, mean ± std over seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=PNG_DPI)
    plt.close(fig)


def plot_losses(report, path):
    """Every loss the host logged, one panel per loss, one line per variant and seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    losses = report["losses"]
    names = list(dict.fromkeys(n for by_seed in losses.values() for curves in by_seed.values() for n in curves))
    columns = min(3, len(names))
    rows = math.ceil(len(names) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(5 * columns, 3.4 * rows), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, name in zip(axes.flat, names):
        for j, (variant, by_seed) in enumerate(losses.items()):
            labelled = False
            for seed, curves in by_seed.items():
                if name not in curves:
                    continue
                iterations, values = zip(*curves[name])
                # Markers: each is one point the host logged.
                ax.plot(iterations, values, color=colors[j % len(colors)], linewidth=1, alpha=0.8,
                        marker="o", markersize=3, label=None if labelled else variant)
                labelled = True
        ax.set_title(name)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(names):]:
        ax.set_axis_off()
    period = loss_log_period(report)
    fig.suptitle(f"training losses from the host's {host_outputs(report['host']).losses_description}, one line per seed"
                 + (f"; a point every {period} iterations" if period else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=PNG_DPI)
    plt.close(fig)
