"""Config overlays for SGB's single-config tools, as command-line opts.

SGB's ``tools/relation_train_net.py`` and ``relation_test_net.py`` read one ``--config-file`` and
then ``KEY VALUE`` opts, so a second configuration file can only be applied as opts. An overlay is
kept in one of two forms, which ``overlay_opts`` both reads:

- a ``.opts`` file: one ``KEY VALUE`` per line, nothing else, so that a shell can splice it in
  with ``$(cat FILE)``; values are written as yacs parses them (``(256,)``, ``True``, ``""``);
- a ``.yaml`` / ``.yml`` file: nested keys as in any yacs config; comments allowed.
"""

import ast
import os


def _format_value(value):
    """Text without whitespace that yacs decodes to what it decodes ``value`` to.

    yacs literal-evaluates string values, from YAML and from opts alike ("(256,)" is a tuple, "cpu"
    stays a string); a string that must stay a string through that (empty, spaces, "True") is quoted.
    """
    if isinstance(value, str):
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            if value and not any(c.isspace() for c in value):
                return value
        if isinstance(value, str):
            if any(c.isspace() for c in value):
                raise ValueError(f"overlay value {value!r} contains whitespace, which $(cat FILE) would split")
            return repr(value)
    if isinstance(value, (list, tuple)):
        items = ",".join(_format_value(v) for v in value)
        return f"({items},)" if len(value) == 1 else f"({items})"
    return repr(value)


def _flatten(node, prefix=""):
    for key, value in node.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def overlay_opts(path):
    """The overlay at ``path`` (``.opts`` or ``.yaml``/``.yml``) as a flat ``[KEY, VALUE, ...]`` list.

    The list can be appended to the host's command line or passed to ``cfg.merge_from_list``.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config overlay {path} not found")
    if path.endswith((".yaml", ".yml")):
        import yaml

        with open(path) as f:
            tree = yaml.safe_load(f) or {}
        if not isinstance(tree, dict):
            raise ValueError(f"{path}: a config overlay must be a mapping of config keys")
        opts = []
        for key, value in _flatten(tree):
            opts += [key, _format_value(value)]
        return opts
    opts = []
    with open(path) as f:
        for number, line in enumerate(f, start=1):
            words = line.split()
            if not words:
                continue
            if len(words) != 2:
                raise ValueError(
                    f"{path}:{number}: expected 'KEY VALUE' (one value without spaces), got {line.strip()!r}")
            opts += words
    return opts


def write_opts(opts, path):
    """Write a flat ``[KEY, VALUE, ...]`` list as a ``.opts`` file (one pair per line)."""
    if len(opts) % 2:
        raise ValueError("opts must alternate KEY and VALUE")
    with open(path, "w") as f:
        f.writelines(f"{key} {value}\n" for key, value in zip(opts[::2], opts[1::2]))
