"""The reader of a host's run folders, by host name: ``results.SgbOutputs`` or ``results_sgtr.SgtrOutputs``.

Apart from both readers, so that ``results_sgtr`` can build on ``results`` without ``results``
importing it back.
"""

from .results import ResultError, SgbOutputs
from .results_sgtr import SgtrOutputs

READERS = {"sgb": SgbOutputs, "sgtr": SgtrOutputs}


def host_outputs(host):
    """The reader of a host's run folders: ``"sgb"`` or ``"sgtr"``."""
    if host not in READERS:
        raise ResultError(f"unknown host {host!r}: sgg-plugins benchmarks 'sgb' and 'sgtr'")
    return READERS[host]()
