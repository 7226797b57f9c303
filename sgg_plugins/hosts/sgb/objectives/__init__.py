"""The objectives an SGB predictor can carry, by config node (``MODEL.<node>``).

Each is a small module of its own: what it reads from a training step and what it adds to the
host's loss dict (``base.SGBObjective``). The order is the order their losses are computed in.
"""

from .align import AlignObjective
from .clipmatch import ClipMatchObjective
from .mrc import MrcObjective
from .probe import ProbeObjective
from .rcl import RclObjective

OBJECTIVES = {
    "ALIGN": AlignObjective,
    "RCL": RclObjective,
    "PROBE": ProbeObjective,
    "CLIPMATCH": ClipMatchObjective,
    "MRC": MrcObjective,
}
