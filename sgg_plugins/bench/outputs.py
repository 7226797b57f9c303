"""The reader of a host's run folders, by host name: ``results.SgbOutputs``, ``results_sgtr.SgtrOutputs`` or
``results_sgg_benchmark.SggBenchmarkOutputs``.

Apart from both readers, so that ``results_sgtr`` can build on ``results`` without ``results``
importing it back.
"""

from .results import ResultError, SgbOutputs
from .results_sgg_benchmark import SggBenchmarkOutputs
from .results_sgtr import SgtrOutputs

READERS = {"sgb": SgbOutputs, "sgtr": SgtrOutputs, "sgg-benchmark": SggBenchmarkOutputs}


def host_outputs(host):
    """The reader of a host's run folders: one of :data:`READERS`."""
    if host not in READERS:
        raise ResultError(f"unknown host {host!r}: sgg-plugins benchmarks {', '.join(map(repr, READERS))}")
    return READERS[host]()
