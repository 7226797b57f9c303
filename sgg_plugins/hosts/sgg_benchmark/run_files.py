"""The configs a run writes stay readable by the vanilla host.

SGG-Benchmark's training script saves its merged config twice in the run's ``output_dir``
(``config.yml`` through ``utils.miscellaneous.save_config``, ``hydra_config.yaml`` directly), both
with ``OmegaConf.save``; its test script ``tools/relation_eval_hydra.py --checkpoint-dir`` reads
them back with ``load_config_from_file``, which merges them into the host's structured schema. The
vanilla schema has no ``model.align`` (``Key 'align' not in 'ModelConfig'``), so a run trained with
an objective would not evaluate in the vanilla host if its config files held the objectives' nodes.

While the plug-in is installed, ``OmegaConf.save`` of a config whose ``model`` holds them writes
the config without them (the host's own keys only), and the nodes
beside it in ``sgg_plugins.yaml`` (``model.<objective>.<key>``): the record of what trained the
model. The objectives are training-time only, so evaluating the run needs nothing of that file;
the host's checkpoint loader ignores the objectives' extra parameters (``sgg_plugins.*``).
"""

import copy
import functools
import os
from pathlib import Path

from .schema import SCHEMA_NODES

OBJECTIVES_FILE = "sgg_plugins.yaml"
OBJECTIVE_KEYS = tuple(name.lower() for name in SCHEMA_NODES)


def split_objective_nodes(config):
    """``(config without the objectives' nodes, {node: its config})`` of a host config; the second is
    empty (and the first ``config`` itself) when its ``model`` holds none."""
    from omegaconf import DictConfig, open_dict

    model = config.get("model") if isinstance(config, DictConfig) else None
    present = [key for key in OBJECTIVE_KEYS if isinstance(model, DictConfig) and key in model]
    if not present:
        return config, {}
    objectives = {key: model[key] for key in present}
    vanilla = copy.deepcopy(config)
    # The node itself must allow deletion: a typed (dataclass) node refuses it unless its own struct
    # flag is off, whatever its parent's.
    with open_dict(vanilla.model):
        for key in present:
            del vanilla.model[key]
    return vanilla, objectives


def _written_path(f):
    if isinstance(f, (str, os.PathLike)):
        return Path(f)
    name = getattr(f, "name", None)
    return Path(name) if isinstance(name, str) else None


def _saving_in_the_vanilla_schema(save):
    @functools.wraps(save)
    def save_in_the_vanilla_schema(config, f, resolve=False):
        from omegaconf import OmegaConf

        vanilla, objectives = split_objective_nodes(config)
        path = _written_path(f)
        if objectives and path is not None:
            save(OmegaConf.create({"model": objectives}), path.parent / OBJECTIVES_FILE, resolve)
        return save(vanilla, f, resolve)

    save_in_the_vanilla_schema.sgg_plugins_original = save
    return save_in_the_vanilla_schema


def install_vanilla_config_files():
    """Make ``OmegaConf.save`` write host configs without the objectives' nodes (module docstring)."""
    from omegaconf import OmegaConf

    if not hasattr(OmegaConf.save, "sgg_plugins_original"):
        OmegaConf.save = staticmethod(_saving_in_the_vanilla_schema(OmegaConf.save))
