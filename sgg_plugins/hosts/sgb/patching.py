"""``sgg-plugins patch``: add or remove the one import line that makes SGB's own scripts load sgg-plugins.

    sgg-plugins patch --check  [HOST]
    sgg-plugins patch --apply  [HOST]
    sgg-plugins patch --revert [HOST]

HOST is the SGB checkout (default: ``$SGB_ROOT``, else the importable ``maskrcnn_benchmark``). The
line goes right before ``from maskrcnn_benchmark.utils.env import setup_environment`` in
``tools/relation_train_net.py`` and ``tools/relation_test_net.py``; nothing else is touched, line
endings are kept, and applying or reverting twice changes nothing. The same change as a file:
``patches/sgb-import-sgg-plugins.patch``.
"""

import sys
from pathlib import Path

from ..locate import HostNotFoundError, host_problem, locate_host

PATCH_LINE = "import sgg_plugins.hosts.sgb.autoinstall  # sgg-plugins"
ANCHOR = "from maskrcnn_benchmark.utils.env import setup_environment"
PATCHED_SCRIPTS = ("tools/relation_train_net.py", "tools/relation_test_net.py")


class PatchError(RuntimeError):
    """A host script cannot be patched as expected; the message says which and what to do."""


def _read_lines(path):
    with open(path, encoding="utf-8", newline="") as f:
        return f.read().splitlines(keepends=True)


def _write_lines(path, lines):
    try:
        with open(path, "w", encoding="utf-8", newline="") as f:
            f.writelines(lines)
    except OSError as error:
        raise PatchError(f"cannot write {path}: {error.strerror}; patch a checkout you can write to") from None


def _is_patch_line(line):
    return line.strip() == PATCH_LINE


def _script_paths(root):
    paths = [Path(root) / name for name in PATCHED_SCRIPTS]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise PatchError(f"not an SGB checkout: missing {', '.join(missing)}")
    return paths


def patch_state(root):
    """{script path relative to the host: whether the import line is there}."""
    return {name: any(map(_is_patch_line, _read_lines(path))) for name, path in zip(PATCHED_SCRIPTS, _script_paths(root))}


def apply_patch(root):
    """Insert the import line into both scripts where missing. Returns {script: "applied" | "already applied"}.

    Both scripts are checked before either is written, so a script without the anchor line leaves
    the checkout as it was.
    """
    planned = {}
    for name, path in zip(PATCHED_SCRIPTS, _script_paths(root)):
        lines = _read_lines(path)
        if any(map(_is_patch_line, lines)):
            planned[name] = None
            continue
        anchor_index = next((i for i, line in enumerate(lines) if line.startswith(ANCHOR)), None)
        if anchor_index is None:
            raise PatchError(
                f"{path} has no line starting with {ANCHOR!r}; add {PATCH_LINE!r} by hand "
                "before its first maskrcnn_benchmark import"
            )
        anchor = lines[anchor_index]
        newline = anchor[len(anchor.rstrip("\r\n")):] or "\n"
        planned[name] = (path, lines[:anchor_index] + [PATCH_LINE + newline] + lines[anchor_index:])
    for name, plan in planned.items():
        if plan is not None:
            _write_lines(*plan)
    return {name: "already applied" if plan is None else "applied" for name, plan in planned.items()}


def revert_patch(root):
    """Remove the import line from both scripts. Returns {script: "reverted" | "not applied"}."""
    result = {}
    for name, path in zip(PATCHED_SCRIPTS, _script_paths(root)):
        lines = _read_lines(path)
        kept = [line for line in lines if not _is_patch_line(line)]
        if len(kept) == len(lines):
            result[name] = "not applied"
            continue
        _write_lines(path, kept)
        result[name] = "reverted"
    return result


def add_arguments(parser):
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--check", action="store_true", help="report whether the line is there (exit 1 if not in both)")
    action.add_argument("--apply", action="store_true", help="add the import line (idempotent)")
    action.add_argument("--revert", action="store_true", help="remove the import line (idempotent)")
    parser.add_argument(
        "host", nargs="?", default=None, help="SGB checkout (default: $SGB_ROOT, else the importable maskrcnn_benchmark)"
    )


def _host_root(host):
    """The checkout named by the HOST argument, else the one ``locate_host`` finds ($SGB_ROOT, importable)."""
    if host is None:
        return locate_host(None)
    root = Path(host).expanduser().resolve()
    problem = host_problem(root)
    if problem:
        raise PatchError(f"HOST {host} is not an SGB checkout: {problem}; give the directory holding "
                         "maskrcnn_benchmark/ and tools/, or omit HOST to use $SGB_ROOT")
    return root


def run(args):
    try:
        root = _host_root(args.host)
        if args.check:
            states = {name: "applied" if present else "not applied" for name, present in patch_state(root).items()}
        elif args.apply:
            states = apply_patch(root)
        else:
            states = revert_patch(root)
    except (HostNotFoundError, PatchError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for name, state in states.items():
        print(f"{root / name}: {state}")
    if args.check:
        return 0 if all(state == "applied" for state in states.values()) else 1
    return 0
