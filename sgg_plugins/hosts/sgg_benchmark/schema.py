"""The config nodes sgg-plugins adds under SGG-Benchmark's ``model`` (Hydra structured config, keys
lowercased by ``structured_config``)."""

from ...config import ADAPTER_DEFAULTS, NODES

# The objectives' nodes, and of the adapter's own keys the one that works on this host
# (``gather_negatives``: PROBE's, RCL's and CLIPMATCH's negatives from every process under
# torch.distributed), which the objectives read.
SCHEMA_NODES = {**NODES, "SGG_PLUGINS": {"GATHER_NEGATIVES": ADAPTER_DEFAULTS["GATHER_NEGATIVES"]}}
