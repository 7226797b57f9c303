"""``sgg-plugins doctor``: is this machine, host, config and dataset ready to train? One table, one verdict a line.

    sgg-plugins doctor [--host-root PATH] [--data DIR] [--config-file CONFIG [KEY VALUE ...]]

Checks, in order, and prints ``ok`` / ``warn`` / ``fail`` for each line:

- the SGB host: found (``--host-root``, else ``$SGB_ROOT``, else the importable one), importable
  with the plug-in installed, which compatibility shims this environment needs, and whether the
  host's compiled ``_C`` extension loads or the torchvision stand-in serves;
- the config (``--config-file`` plus opts, as the launchers take them): every key known, every
  value typed and valid;
- each dataset the config names (train, val, test through its ``PATHS_CATALOG``) or the folder
  given with ``--data`` (SGB's four files under their stock names): every check of
  ``sgg_plugins.data.vg_check``, reading every image;
- GloVe in ``GLOVE_DIR`` (the data shim uses fixed random vectors without it);
- for MODEL.RCL: the text embedding file, or the CLIP weights it would be computed from;
- the GPUs.

Exits 1 when any line fails, else 0. ``--no-host`` skips the host (a dataset on a machine without SGB).
"""

import os

from .data.vg_check import FAIL, OK, WARN, Finding, VGFiles, check_vg_dataset

STOCK_FILES = {"roidb_file": "VG-SGG-with-attri.h5", "dict_file": "VG-SGG-dicts-with-attri.json",
               "image_file": "image_data.json", "img_dir": "VG_100K"}


def folder_dataset(folder):
    """The dataset files in ``folder`` under SGB's stock names (what make-synthetic-vg writes)."""
    return VGFiles(**{key: os.path.join(folder, name) for key, name in STOCK_FILES.items()})


def check_host(host_root):
    """(findings, host root or None): found, importable with the plug-in, shims, compiled ops."""
    from .hosts.locate import HostNotFoundError, locate_host

    try:
        root = locate_host(host_root)
    except HostNotFoundError as error:
        return [Finding(FAIL, "host", str(error))], None
    findings = [Finding(OK, "host", f"SGB checkout at {root}")]
    try:
        from .hosts.sgb import compat, install, ops

        install(str(root))
        import maskrcnn_benchmark.modeling.detector  # noqa: F401  (the whole model code)
    except Exception as error:  # whatever breaks the import is what the user must see
        findings.append(Finding(FAIL, "host import", f"{type(error).__name__}: {error}"))
        return findings, None
    findings.append(Finding(OK, "host import", "maskrcnn_benchmark and its model code import with the plug-in"))
    shims = ", ".join(compat.install_compat()) or "none"
    findings.append(Finding(OK, "compatibility shims", shims))
    compiled = ops.load_compiled_extension(root, _quiet_logger())
    if compiled is None:
        findings.append(Finding(OK, "compiled _C", "not built (or built for another torch): torchvision serves nms, "
                                                   "ROIAlign and ROIPool; focal loss and deformable conv unavailable"))
    else:
        _, filled_in = ops.build_extension_module(compiled)
        detail = "built and loads" + (f"; stand-in for {', '.join(filled_in)}" if filled_in else "")
        findings.append(Finding(OK, "compiled _C", detail))
    return findings, root


def _quiet_logger():
    import logging

    logger = logging.getLogger("sgg_plugins.doctor.quiet")
    logger.propagate = False
    logger.addHandler(logging.NullHandler())
    return logger


def check_config(config_file, opts):
    """(findings, merged config or None)."""
    from maskrcnn_benchmark.config import cfg as host_cfg

    from .config import ConfigError, validate_config
    from .hosts.sgb.preflight import PreflightError, check_predictor, merge_config

    try:
        cfg = merge_config(host_cfg, config_file, opts)
        check_predictor(cfg)
        validate_config(cfg)
    except (PreflightError, ConfigError) as error:
        return [Finding(FAIL, "config", str(error))], None
    enabled = [name for name in ("ALIGN", "RCL", "PROBE", "CLIPMATCH", "MRC")
               if name in cfg.MODEL and cfg.MODEL[name].ENABLED]
    detail = f"{config_file or 'host defaults'}: keys and values valid; predictor {cfg.MODEL.ROI_RELATION_HEAD.PREDICTOR}"
    return [Finding(OK, "config", detail + (f"; {', '.join('MODEL.' + n for n in enabled)} on" if enabled else ""))], cfg


def check_datasets(cfg, data_folder):
    """Findings for ``--data`` (with the config's class counts if a config is given) or the config's datasets."""
    from_config = {}
    if cfg is not None and data_folder is None:
        from .hosts.sgb.catalog import PreflightError, catalog_datasets

        names = [*cfg.DATASETS.TRAIN, *cfg.DATASETS.VAL, *cfg.DATASETS.TEST]
        try:
            from_config = catalog_datasets(cfg, names)
        except PreflightError as error:
            return [Finding(FAIL, "dataset", str(error))]
    datasets = {data_folder: folder_dataset(data_folder)} if data_folder else from_config
    counts = {}
    if cfg is not None:
        from .hosts.sgb.preflight import class_counts

        counts = class_counts(cfg)
    findings, seen = [], []
    for name, files in datasets.items():
        if files in seen:
            continue
        seen.append(files)
        for finding in check_vg_dataset(files, counts, read_images=True):
            findings.append(Finding(finding.verdict, f"{name}: {finding.subject}", finding.detail))
    return findings


def check_glove(glove_dir, dim):
    stem = os.path.join(glove_dir or "", f"glove.6B.{dim}d")
    for suffix in (".txt", ".pt"):
        if os.path.isfile(stem + suffix):
            return Finding(OK, "GloVe", f"{stem + suffix}")
    return Finding(WARN, "GloVe", f"no {stem}.txt or .pt (GLOVE_DIR): object embeddings will use fixed random "
                                  "vectors, not word semantics")


def check_rcl_text(cfg):
    rcl = cfg.MODEL.RCL
    if rcl.TEXT_EMBEDDINGS:
        from .hosts.sgb.preflight import checkpoint_problem

        problem = checkpoint_problem(rcl.TEXT_EMBEDDINGS)
        if problem:
            return Finding(FAIL, "RCL text embeddings", f"MODEL.RCL.TEXT_EMBEDDINGS {rcl.TEXT_EMBEDDINGS} {problem}: "
                                                        "make it with `sgg-plugins embed`")
        return Finding(OK, "RCL text embeddings", rcl.TEXT_EMBEDDINGS)
    from .text.clip_encoder import resolve_clip_weights
    from .text.sentence_encoder import resolve_sentence_transformer
    from .text.weights import SENTENCE_TRANSFORMERS, CLIPUnavailableError

    if rcl.CLIP_MODEL.startswith(SENTENCE_TRANSFORMERS):
        try:
            source, local_only = resolve_sentence_transformer(rcl.CLIP_MODEL)
        except (CLIPUnavailableError, ImportError) as error:
            return Finding(FAIL, "RCL text encoder", str(error))
        if local_only:
            return Finding(OK, "RCL text encoder", f"sentence-transformers {source}")
        return Finding(WARN, "RCL text encoder",
                       f"sentence-transformers {source!r} is downloaded when the model is built")
    try:
        weights, _ = resolve_clip_weights(rcl.CLIP_MODEL, rcl.CLIP_PRETRAINED)
    except CLIPUnavailableError as error:
        return Finding(FAIL, "RCL CLIP weights", str(error))
    if weights is None or os.path.isfile(str(weights)):
        return Finding(OK, "RCL CLIP weights", f"{rcl.CLIP_MODEL}: {weights or 'local model folder'}")
    return Finding(WARN, "RCL CLIP weights", f"{rcl.CLIP_MODEL} {weights!r} is downloaded when the model is built")


def check_gpus(device):
    import torch

    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        return Finding(OK, "GPUs", f"{len(names)}: {', '.join(names)}")
    if str(device).startswith("cuda"):
        return Finding(WARN, "GPUs", f"none; MODEL.DEVICE {device} falls back to cpu (training is slow)")
    return Finding(OK, "GPUs", "none; runs on cpu")


def run_checks(host_root=None, data_folder=None, config_file="", opts=(), with_host=True):
    findings, cfg = [], None
    if with_host:
        host_findings, root = check_host(host_root)
        findings += host_findings
        if root is not None and (config_file or opts):
            config_findings, cfg = check_config(config_file, list(opts))
            findings += config_findings
    elif config_file or opts:
        findings.append(Finding(FAIL, "config", "--config-file needs the host (its config holds the keys); "
                                                "drop --no-host"))
    if data_folder or cfg is not None:
        findings += check_datasets(cfg, data_folder)
    if cfg is not None:
        findings.append(check_glove(cfg.GLOVE_DIR, cfg.MODEL.ROI_RELATION_HEAD.EMBED_DIM))
        if "RCL" in cfg.MODEL and cfg.MODEL.RCL.ENABLED:
            findings.append(check_rcl_text(cfg))
    findings.append(check_gpus(cfg.MODEL.DEVICE if cfg is not None else "cpu"))
    return findings


def format_table(findings):
    width = max(len(f.subject) for f in findings)
    return "\n".join(f"{f.verdict:<4}  {f.subject:<{width}}  {f.detail}" for f in findings)


def add_arguments(parser):
    parser.add_argument("--host-root", default=None,
                        help="SGB checkout (default: $SGB_ROOT, else the importable maskrcnn_benchmark)")
    parser.add_argument("--no-host", action="store_true", help="skip the host checks (e.g. a dataset on a machine "
                                                                 "without SGB)")
    parser.add_argument("--data", default=None, metavar="DIR",
                        help="a dataset folder with SGB's files under their stock names (VG-SGG-with-attri.h5, "
                             "VG-SGG-dicts-with-attri.json, image_data.json, VG_100K/), checked instead of the "
                             "config's datasets")
    parser.add_argument("--config-file", default="", help="the config the launchers would get; its datasets (via "
                                                          "PATHS_CATALOG), GloVe and RCL files are checked")
    parser.add_argument("opts", nargs="*", metavar="KEY VALUE", help="config opts, as on the launchers' command line")


def run(args):
    findings = run_checks(args.host_root, args.data, args.config_file, args.opts, with_host=not args.no_host)
    print(format_table(findings))
    failed = sum(f.verdict == FAIL for f in findings)
    print(f"\n{failed} check(s) failed" if failed else "\nall checks passed")
    return 1 if failed else 0
