"""What a bench runs: its variants (built-in or ``NAME=KEY VALUE ...``) and how two plans differ.

A plan is the base command and one variant's opts and seed (a run's ``run.json``), or the base command
and every variant and seed (``bench.json``). A rerun into the same folder is refused when the plans
differ, and :func:`plan_differences` names the keys that do.
"""

import re
import shlex

BUILTIN_VARIANTS = {
    "baseline": [],
    "align": ["MODEL.ALIGN.ENABLED", "True"],
    "rcl": ["MODEL.RCL.ENABLED", "True"],
    "probe": ["MODEL.PROBE.ENABLED", "True"],
    "clipmatch": ["MODEL.CLIPMATCH.ENABLED", "True"],
    "mrc": ["MODEL.MRC.ENABLED", "True"],
    # Every objective at once (the evidence protocol's "all five together"; until this change "all"
    # was ALIGN + RCL + PROBE, as the 200-iteration reports under docs/cpu_bench record).
    "all": ["MODEL.ALIGN.ENABLED", "True", "MODEL.RCL.ENABLED", "True", "MODEL.PROBE.ENABLED", "True",
            "MODEL.CLIPMATCH.ENABLED", "True", "MODEL.MRC.ENABLED", "True"],
}
DEFAULT_VARIANTS = ("baseline", "align", "rcl", "probe", "clipmatch", "mrc", "all")
# MODEL.ALIGN is the one objective with an SGTR adapter.
SGTR_VARIANTS = ("baseline", "align")
# SGG-Benchmark attaches every objective to its Motifs but only ALIGN to REACT++; RCL and CLIPMATCH
# need text-embedding files in the base opts. By default: the comparison every predictor allows.
SGG_BENCHMARK_VARIANTS = ("baseline", "align")
_VARIANT_NAME = re.compile(r"^[A-Za-z0-9_.+-]+$")


class BenchError(ValueError):
    """The bench command line or an existing bench folder does not make a valid plan."""


def parse_variant(text, host="sgb"):
    """``"NAME=KEY VALUE [KEY VALUE ...]"`` -> ``(name, opts)``; a bare built-in name is accepted too."""
    name, _, opts_text = text.partition("=")
    name = name.strip()
    if not _VARIANT_NAME.match(name):
        raise BenchError(f"variant {text!r}: the name must be letters, digits or _.+- (it names a folder)")
    if not _:
        if name not in BUILTIN_VARIANTS:
            raise BenchError(
                f"unknown variant {name!r}: built-in variants are {', '.join(BUILTIN_VARIANTS)}; "
                f"define others as \"NAME=KEY VALUE ...\", e.g. \"lr_low=SOLVER.BASE_LR 0.001\""
            )
        if host == "sgtr" and name not in SGTR_VARIANTS:
            raise BenchError(f"variant {name!r} is not available on SGTR: only MODEL.ALIGN exists there "
                             f"(SGTR variants: {', '.join(SGTR_VARIANTS)}, or your own --variant NAME=KEY VALUE ...)")
        if host == "sgg-benchmark":  # its Hydra keys are lowercase, its booleans true / false
            return name, [item.lower() for item in BUILTIN_VARIANTS[name]]
        return name, list(BUILTIN_VARIANTS[name])
    opts = shlex.split(opts_text)
    if len(opts) % 2:
        raise BenchError(f"variant {name!r}: opts must be KEY VALUE pairs, got {opts}")
    return name, opts


def plan_variants(builtin_names, custom_specs, host="sgb"):
    variants = {}
    for text in list(builtin_names) + list(custom_specs):
        name, opts = parse_variant(text, host)
        if name in variants and variants[name] != opts:
            raise BenchError(f"variant {name!r} is defined twice with different opts")
        variants[name] = opts
    if not variants:
        raise BenchError("no variant to run: give --variants and/or --variant")
    return variants


def opts_to_dict(opts):
    """``[KEY, VALUE, ...]`` -> ``{KEY: VALUE}``; a repeated key keeps its last value, as yacs merges."""
    return dict(zip(opts[::2], opts[1::2]))


# Keys that change only what a run prints, not what it computes: runs that differ in them are the
# same experiment (a bench gains a variant after its log period was raised for the loss plot).
LOG_ONLY_KEYS = frozenset({"MODEL.SGG_PLUGINS.LOG_PERIOD"})


def bench_commands(plan):
    """The bench commands recorded in a ``bench.json``, in order (files before ``commands`` kept one ``command``)."""
    return list(plan.get("commands") or ([plan["command"]] if plan.get("command") else []))


def plan_differences(old, new):
    """What changed between two run plans (or two bench.json files), one short phrase per key.

    Opts are compared as settings (a later duplicate wins, order does not matter), so a refused
    rerun names the keys that differ instead of printing both plans. :data:`LOG_ONLY_KEYS` are not
    differences.
    """
    differences = []
    for field in sorted(set(old) | set(new)):
        before, after = old.get(field), new.get(field)
        if field.endswith("opts") and isinstance(before, list) and isinstance(after, list):
            before, after = opts_to_dict(before), opts_to_dict(after)
            for key in sorted((set(before) | set(after)) - LOG_ONLY_KEYS):
                if key not in before:
                    differences.append(f"{field}: added {key} {after[key]}")
                elif key not in after:
                    differences.append(f"{field}: removed {key} {before[key]}")
                elif before[key] != after[key]:
                    differences.append(f"{field}: {key} {before[key]} -> {after[key]}")
        elif before != after:
            differences.append(f"{field}: {before!r} -> {after!r}")
    return differences
