"""Checks the launchers run before the host's script: bad input stops with one line, not a traceback.

``preflight(script, host_argv, world_size, plugin)`` parses the host script's arguments the way the
host does, merges the config file and opts into a clone of the host's config, and checks, in order:
every key exists (a typo gets "did you mean ...?") and every value has its key's type; the
relation predictor is registered; the plug-in's keys validate; the batch sizes divide among the
processes; the checkpoint the script will load (``OUTPUT_DIR/last_checkpoint`` first, as the
host's checkpointer does) exists and is a complete PyTorch file; the test script's OUTPUT_DIR
exists and it has something to test (a last_checkpoint or MODEL.WEIGHT, not a random model); every
Visual Genome-format dataset the run reads passes ``sgg_plugins.data.vg_check``, every image
decoded (on rank 0; decoded once per file version, see ``sgg_plugins.data.image_decode``); the
text banks of MODEL.RCL and MODEL.CLIPMATCH load, or their text encoder can be had (``text_banks``).
Each failure raises :class:`PreflightError` with the line the user sees. Nothing is built, so the
checks take seconds (plus the first decode of images never seen), and they run before the host
prints its configuration.
"""

import argparse
import difflib
import os
import re
import zipfile

from ...config import NODES, ConfigError, validate_config
from ...data.vg_check import check_vg_dataset, first_failure
from .catalog import PreflightError, catalog_datasets
from .predictors import registered_predictor
from .text_banks import check_text_banks

TYPE_MISMATCH = re.compile(r"Type mismatch \((.+?) vs\. (.+?)\) with values \((.*) vs\. (.*)\) for config key: (\S+)")
PLUGIN_NODES = tuple(f"MODEL.{name}." for name in NODES)


def parse_host_args(host_argv):
    """The host scripts' own arguments (``--config-file``, ``--skip-test``, opts), as their parsers read them."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--config-file", default="")
    parser.add_argument("--local_rank", type=int, default=0)
    parser.add_argument("--skip-test", dest="skip_test", action="store_true")
    parser.add_argument("opts", nargs=argparse.REMAINDER)
    args, _ = parser.parse_known_args(host_argv)
    return args


def config_keys(node, prefix=""):
    """Every full key of a yacs config, e.g. "MODEL.ALIGN.ENABLED"."""
    keys = []
    for key, value in node.items():
        full = prefix + key
        keys += config_keys(value, full + ".") if isinstance(value, dict) else [full]
    return keys


def _unknown_key_line(key, cfg, plugin):
    if not plugin and key.startswith(PLUGIN_NODES):
        return f"{key} is a key of the plug-in, which --without-plugin leaves out: drop the key or the flag"
    close = difflib.get_close_matches(key, config_keys(cfg), n=1, cutoff=0.8)
    if close:
        return f"{key} is not a config key; did you mean {close[0]}?"
    return f"{key} is not a config key of the host or the plug-in; check its spelling in the config file and opts"


def _type_name(text):
    match = re.fullmatch(r"<class '(\w+)'>", text)
    return match.group(1) if match else text


def merge_config(cfg, config_file, opts, plugin=True):
    """A clone of ``cfg`` with the file and opts merged as the host merges them; errors as one line."""
    if config_file and not os.path.isfile(config_file):
        raise PreflightError(f"--config-file {config_file} does not exist")
    merged = cfg.clone()
    merged.defrost()
    source = config_file
    try:
        if config_file:
            merged.merge_from_file(config_file)
        source = "the command-line opts"
        merged.merge_from_list(list(opts))
    except KeyError as error:
        message = str(error.args[0]) if error.args else str(error)
        key = message.rpartition(": ")[2]
        raise PreflightError(_unknown_key_line(key, merged, plugin)) from None
    except ValueError as error:
        match = TYPE_MISMATCH.search(str(error))
        if not match:
            raise PreflightError(f"in {source}: {error}") from None
        current_type, given_type, current, given, key = match.groups()
        raise PreflightError(
            f"{key} = {given} is a {_type_name(given_type)}, but {key} takes a {_type_name(current_type)} "
            f"(its value before this was {current})") from None
    except AssertionError as error:  # yacs asserts on opts: an unknown key, or an odd number of tokens
        message = str(error)
        if message.startswith("Non-existent key: "):
            raise PreflightError(_unknown_key_line(message.rpartition(": ")[2], merged, plugin)) from None
        raise PreflightError(f"in {source}: {message}: opts are KEY VALUE pairs") from None
    return merged


def check_predictor(cfg, plugin=True):
    # The model code the host's script imports anyway: every predictor class it (or a fork) registers.
    import maskrcnn_benchmark.modeling.detector  # noqa: F401
    from maskrcnn_benchmark.modeling import registry
    from maskrcnn_benchmark.modeling.roi_heads.relation_head import roi_relation_predictors  # noqa: F401

    if not cfg.MODEL.RELATION_ON:
        return
    try:
        registered_predictor(registry.ROI_RELATION_PREDICTOR, cfg, plugin=plugin)
    except ConfigError as error:
        raise PreflightError(str(error)) from None


def check_batch_sizes(cfg, script, world_size):
    keys = ("SOLVER.IMS_PER_BATCH", "TEST.IMS_PER_BATCH") if script == "relation_train_net" else ("TEST.IMS_PER_BATCH",)
    for key in keys:
        section, _, field = key.partition(".")
        value = cfg[section][field]
        if value % world_size:
            raise PreflightError(f"{key} = {value} does not divide among the {world_size} processes: set it to a "
                                 f"multiple of {world_size}")


def checkpoint_problem(path):
    """Why ``path`` is not a loadable PyTorch checkpoint, or None when it looks complete."""
    if not os.path.isfile(path):
        return "does not exist"
    if zipfile.is_zipfile(path):  # torch.save's format: every member's CRC must hold
        try:
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
        except (zipfile.BadZipFile, OSError, EOFError) as error:
            return f"is corrupt ({error})"
        return None if bad is None else f"is corrupt (member {bad} fails its checksum)"
    with open(path, "rb") as f:
        head = f.read(2)
    if head[:1] == b"\x80":  # torch's legacy format and Detectron's .pkl are plain pickles
        return None
    return "is truncated or not a PyTorch file (no zip directory, no pickle header)"


def check_checkpoint(cfg, script):
    """The file the host's checkpointer will load: ``OUTPUT_DIR/last_checkpoint``'s, else the config's."""
    pointer = os.path.join(cfg.OUTPUT_DIR, "last_checkpoint")
    if cfg.OUTPUT_DIR and os.path.isfile(pointer):
        with open(pointer) as f:
            named = f.read().strip()
        problem = checkpoint_problem(named) if named else "is empty"
        if problem:
            raise PreflightError(
                f"{pointer} names {named!r}, which {problem}: restore that file, write the path of a good "
                f"checkpoint into {pointer}, or delete {pointer} to start from "
                + ("MODEL.PRETRAINED_DETECTOR_CKPT" if script == "relation_train_net" else "MODEL.WEIGHT"))
        return
    key = "MODEL.PRETRAINED_DETECTOR_CKPT" if script == "relation_train_net" else "MODEL.WEIGHT"
    path = cfg.MODEL.PRETRAINED_DETECTOR_CKPT if script == "relation_train_net" else cfg.MODEL.WEIGHT
    if not path and script == "relation_test_net":
        # The host's checkpointer would log "No checkpoint found" and evaluate a random model.
        raise PreflightError(
            f"nothing to test: OUTPUT_DIR {cfg.OUTPUT_DIR!r} has no last_checkpoint and MODEL.WEIGHT is '', so "
            "the host would evaluate a randomly initialised model; point OUTPUT_DIR at the training run's folder, "
            "or give MODEL.WEIGHT the checkpoint to evaluate")
    if not path or "://" in path:  # nothing to load, or the host's catalog / a URL
        return
    problem = checkpoint_problem(path)
    if problem:
        raise PreflightError(f"{key} = {path!r} {problem}: fix the path or give {key} ''")


def check_test_output_dir(cfg, script):
    if script == "relation_test_net" and cfg.OUTPUT_DIR and not os.path.isdir(cfg.OUTPUT_DIR):
        raise PreflightError(
            f"OUTPUT_DIR {cfg.OUTPUT_DIR} does not exist: the test script evaluates the checkpoint named in "
            "OUTPUT_DIR/last_checkpoint (else MODEL.WEIGHT) and writes its results there; point OUTPUT_DIR at "
            "the training run's folder, or create it to evaluate MODEL.WEIGHT")


def dataset_names(cfg, script, skip_test):
    if script == "relation_test_net":
        return list(cfg.DATASETS.TEST)
    return [*cfg.DATASETS.TRAIN, *cfg.DATASETS.VAL, *([] if skip_test else cfg.DATASETS.TEST)]


def class_counts(cfg):
    counts = {"MODEL.ROI_BOX_HEAD.NUM_CLASSES": ("labels", cfg.MODEL.ROI_BOX_HEAD.NUM_CLASSES)}
    if cfg.MODEL.RELATION_ON:
        counts["MODEL.ROI_RELATION_HEAD.NUM_CLASSES"] = ("predicates", cfg.MODEL.ROI_RELATION_HEAD.NUM_CLASSES)
    if cfg.MODEL.ATTRIBUTE_ON:
        counts["MODEL.ROI_ATTRIBUTE_HEAD.NUM_ATTRIBUTES"] = ("attributes", cfg.MODEL.ROI_ATTRIBUTE_HEAD.NUM_ATTRIBUTES)
    return counts


def check_datasets(cfg, names, read_images=False):
    """Findings per distinct dataset; raises on the first failure."""
    checked = {}
    for name, files in catalog_datasets(cfg, names).items():
        if files in checked.values():
            continue
        findings = check_vg_dataset(files, class_counts(cfg), read_images=read_images)
        failure = first_failure(findings)
        if failure is not None:
            raise PreflightError(f"dataset {name}: {failure.line()}")
        checked[name] = files


def preflight(script, host_argv, world_size=1, plugin=True):
    """Run every check for ``tools/<script>.py`` with ``host_argv``; return the merged config clone."""
    from maskrcnn_benchmark.config import cfg as host_cfg

    args = parse_host_args(host_argv)
    cfg = merge_config(host_cfg, args.config_file, args.opts, plugin)
    check_predictor(cfg, plugin)
    if plugin:
        try:
            validate_config(cfg)
        except ConfigError as error:
            raise PreflightError(str(error)) from None
    check_batch_sizes(cfg, script, world_size)
    check_test_output_dir(cfg, script)
    check_checkpoint(cfg, script)
    if cfg.MODEL.RELATION_ON:
        # One process decodes the images: the others wait for it in init_process_group, and torchrun
        # ends them when it stops.
        decode = os.environ.get("RANK", "0") == "0"
        check_datasets(cfg, dataset_names(cfg, script, args.skip_test), read_images=decode)
        if plugin:
            check_text_banks(cfg)
    return cfg
