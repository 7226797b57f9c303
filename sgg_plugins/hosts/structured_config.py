"""The objectives' config nodes for hosts whose configs are lowercase structured configs (dataclasses
read by OmegaConf, composed by Hydra), converted from the one place that defines them.

``sgg_plugins.config`` holds every key and default once, in SGB's yacs spelling (``MODEL.ALIGN.
MASK_PROB``), and the validators that check them. A host such as Maelic/SGG-Benchmark spells its
keys in lowercase (``model.align.mask_prob``) and rejects any key its dataclass schema lacks. This
module gives such a host:

- ``node_dataclass`` / ``objective_dataclasses``: one dataclass per node of ``config.NODES``, with
  lowercase fields typed and defaulted from those defaults, to add to the host's schema (so that
  OmegaConf type-checks and converts override values as it does the host's own keys);
- ``UpperCaseView``: a read-only view of a lowercase node under the yacs spelling, so the existing
  validators (and code written against yacs nodes) read it unchanged;
- ``validate_lowercase_nodes``: the validators run on the host's ``model`` node, their one-line
  errors naming the keys as the host's users write them.
"""

import dataclasses
import re

from ..config import NODES, VALIDATORS, ConfigError


def node_dataclass(name, defaults):
    """A dataclass ``<Name>Config`` with one lowercase field per key of ``defaults``, typed from the
    default's type (bool, int, float or str) and defaulted to it."""
    fields = []
    for key, value in defaults.items():
        if not isinstance(value, (bool, int, float, str)):
            raise TypeError(f"{name}.{key}: only bool, int, float and str defaults convert, got {type(value).__name__}")
        fields.append((key.lower(), type(value), dataclasses.field(default=value)))
    return dataclasses.make_dataclass(f"{name.title().replace('_', '')}Config", fields)


def objective_dataclasses(nodes=None):
    """``{lowercase node name: dataclass}`` for every node of ``config.NODES`` (or of ``nodes``)."""
    return {name.lower(): node_dataclass(name, defaults) for name, defaults in (nodes or NODES).items()}


def extended_dataclass(base, extra):
    """A subclass of dataclass ``base`` with one more field per ``extra`` item (field name ->
    dataclass), each defaulting to that dataclass's defaults. Same class name, so the host's
    messages and saved configs read as before."""
    fields = [(name, node, dataclasses.field(default_factory=node)) for name, node in extra.items()]
    return dataclasses.make_dataclass(base.__name__, fields, bases=(base,))


class UpperCaseView:
    """Read-only yacs-spelled access to a lowercase mapping node (an OmegaConf DictConfig or a dict):
    ``view.MASK_PROB``, ``view["MASK_PROB"]``, ``"MASK_PROB" in view``; nested nodes are views too."""

    def __init__(self, node):
        object.__setattr__(self, "_node", node)

    def _wrap(self, value):
        return UpperCaseView(value) if hasattr(value, "keys") else value

    def __getitem__(self, key):
        return self._wrap(self._node[key.lower()])

    def __getattr__(self, key):
        if key.startswith("_"):
            raise AttributeError(key)
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None

    def __setattr__(self, key, value):
        raise TypeError("UpperCaseView is read-only")

    def __contains__(self, key):
        return key.lower() in self._node

    def keys(self):
        return [key.upper() for key in self._node.keys()]

    def items(self):
        return [(key.upper(), self._wrap(self._node[key])) for key in self._node.keys()]


_YACS_KEY = re.compile(r"\bMODEL((?:\.[A-Z][A-Z0-9_]*)+)")


def lowercase_key_names(message):
    """``message`` with every yacs-spelled ``MODEL.X.Y`` key written as the lowercase ``model.x.y``."""
    return _YACS_KEY.sub(lambda m: "model" + m.group(1).lower(), message)


def validate_lowercase_nodes(model_node, nodes=None):
    """Run ``config.VALIDATORS`` on the objectives' nodes under the host's lowercase ``model`` node.

    Raises :class:`ConfigError` naming the key as the host spells it (``model.align.mask_prob``).
    """
    for name in (nodes or NODES):
        try:
            VALIDATORS[name](UpperCaseView(model_node[name.lower()]))
        except ConfigError as error:
            raise ConfigError(lowercase_key_names(str(error))) from None
