"""Configuration of the regularizers: defaults in one place, validation before the model is built.

Follows detectron2's ``add_*_config(cfg)`` pattern: each regularizer adds its own node to the
host's yacs ``cfg`` (``MODEL.ALIGN``, ``MODEL.RCL``, ``MODEL.PROBE``, ``MODEL.CLIPMATCH``,
``MODEL.MRC``). The keys and defaults are
those of ``docs/methods.md``; every choice a paper leaves open is a key so that its ablations are config
lines. ``validate_config`` runs before the host builds its model and names the offending key and
the allowed values, so a typo never surfaces as a traceback from deep inside training.

``MODEL.SGG_PLUGINS`` holds what concerns the attachment to the host rather than one objective.

This module does not import yacs at module level: the host brings its own ``CfgNode`` class and we
build the nodes with that class (``type(cfg)``), so merges from YAML and opts behave as the host's.
"""

ALIGN_HEADS = ("untied_mlp", "untied_linear", "tied")
ALIGN_LOSSES = ("kl", "supervised")
ALIGN_TARGETS = ("original",)
KL_DIRECTIONS = ("forward", "reverse")
KL_REDUCTIONS = ("relation", "element")
MASK_UNITS = ("element", "relation")
RCL_LEVELS = ("dual", "triple", "unary")
RCL_SAMPLING_EMBEDDINGS = ("glove", "clip")
RCL_ADAPTERS = ("linear", "attention")
RCL_PLACEMENTS = ("classifier", "side")
PROBE_FEATURES = ("edge_ctx", "obj_ctx")
PROBE_VIEWS = ("augment", "mask")

# Predictors of Scene-Graph-Benchmark.pytorch the regularizers know how to mirror / read.
SUPPORTED_PREDICTORS = {
    "align": ("MotifPredictor", "VCTreePredictor", "TransformerPredictor", "IMPPredictor",
              "CausalAnalysisPredictor"),
    "rcl": ("MotifPredictor", "VCTreePredictor", "TransformerPredictor", "IMPPredictor"),
    "probe": ("MotifPredictor", "VCTreePredictor", "TransformerPredictor", "IMPPredictor"),
    "clipmatch": ("MotifPredictor", "VCTreePredictor", "TransformerPredictor", "IMPPredictor"),
    "mrc": ("MotifPredictor", "VCTreePredictor", "TransformerPredictor", "IMPPredictor"),
}

ALIGN_DEFAULTS = dict(
    ENABLED=False,
    MASK_PROB=0.1,  # p of Eq. 1 (§4.1, §4.2)
    # Eq. 1 zeroes "each element R_i in R" where R ∈ R^{N×d} and "N is the number of relations":
    # R_i indexes a row, one relation's feature vector, and the SGTR form (§3.2) likewise hides a
    # whole key vector from a query when it sets one attention entry to −inf. "relation" (each
    # row: a relation's, or on the edge-context input an object's, whole vector) is the default;
    # "element" (each scalar) is the other reading of the word.
    MASK_UNIT="relation",
    WEIGHT=10.0,  # lambda of Eq. 3
    # "untied_mlp": §3.3's 3-layer MLP replacing the last two linear layers; "untied_linear": an
    # untied copy of the last layer (§3.2, SGTR's form); "tied": the original head (Table 3 'PH').
    HEAD="untied_mlp",
    # Hidden width of the untied MLP; the paper gives none. 0 = the width of its pairwise object
    # input (2 x CONTEXT_HIDDEN_DIM = 1024 on SGB's stock Motifs config: ~6 M parameters on the
    # 1024 + 4096-wide input, against ~38 M with 4096-wide hidden layers), the width at which the
    # host's Motifs represents a pair before post_cat.
    HEAD_HIDDEN_DIM=0,
    LOSS="kl",  # "kl": self-supervised alignment (SSA); "supervised": Table 3 'SA'
    # Weight of the mirror's supervised loss under LOSS supervised: "plug the same supervised loss in
    # the mirrored relation predictor" (§4.3), i.e. at the host's own relation-loss weight (SGB
    # sums loss_rel unweighted: 1.0; on SGTR it multiplies the host's weighted criterion terms), not
    # lambda.
    SUPERVISED_WEIGHT=1.0,
    TARGET="original",
    # KL(P_orig || P_masked), the original as reference distribution, as §3.1.2's text says ("we
    # fix P_original and treat it as the target"); Eq. 2 is written the other way ("reverse").
    KL_DIRECTION="forward",
    # The paper gives lambda but not the reduction. "relation": sum over classes, mean over
    # relations (the KL of each relation's distribution, averaged); "element": mean over classes
    # too, as F.kl_div's default reduction, 51x smaller on VG-50. Default "element", by
    # measurement: under the headline CPU benchmark (docs/cpu_bench/README.md, Motifs PredCls,
    # n = 5) lambda = 10 on the per-relation KL lowered mR@50 by 2.12 (p = 0.018, every seed),
    # while on the class-averaged KL it was level with the baseline (+1.64, p = 0.29) and 3.77
    # above the per-relation form (p = 0.022).
    KL_REDUCTION="element",
    USE_FREQ_BIAS=False,  # "The predicate prior is not used in the mirrored relation predictor" (§3.3)
    DETACH_INPUT=True,  # "we stop the gradient of the alignment loss at the input feature" (§3.1)
)

RCL_DEFAULTS = dict(
    ENABLED=False,
    WEIGHT=1.0,
    LEVELS="dual",
    # Where h_rel sits. "classifier": seed 001's architecture, the host's relation classifier reads
    # h_rel's output (§3.4: "the learned relation feature v_ij^r is used to predict final relation
    # label"), in training and evaluation, so RCL shapes the feature that is classified; h_rel keeps
    # the classifier's input width and starts as the identity, so the host's model is unchanged at
    # initialisation. "side": the adapters beside the classifier, inference the host's own.
    PLACEMENT="classifier",
    # Stop RCL's gradient at the host's features: only the adapters, W matrices (and the learned
    # scale) learn from it, as in seed 001, whose CLIP encoders are frozen ("their parameters are
    # fixed during training", §3.2); the classifier's cross entropy still trains everything.
    DETACH_INPUT=True,
    # tau of Eq. 4; seed 001 gives no value. Fixed by default: CLIP's learnable logit scale (initial
    # 1/TEMPERATURE, clipped at 100) is LEARN_TEMPERATURE True, but under the host's SGD at the host's
    # LR it fell from 14.3 to 0.3-2.1 on every bench run (10 of 10), flattening the contrast; CLIP
    # learns it with Adam at a small LR over 32k-pair batches.
    TEMPERATURE=0.07,
    LEARN_TEMPERATURE=False,
    GAMMA=0.5,  # gamma of Eq. 5
    SYNONYM_THRESHOLD=0.7,  # epsilon of Eq. 7
    MIN_SIMILARITY=0.0,  # eta of Eq. 7
    WEIGHTED_NEGATIVES=True,
    EMBED_DIM=512,
    # The e of Eq. 7, ranking negatives: "glove" — word vectors of the phrase's tokens from the
    # host's GLOVE_DIR, as the paper ("e.g., word2vec embeddings (Pennington et al., 2014)"; ε = 0.7
    # was tuned on these, Table 6); "clip" — CLIP text embeddings of the bare phrases, which sit in
    # a narrow cone (cosines 0.7-0.9), where ε = 0.7 can drop nearly every negative.
    SAMPLING_EMBEDDINGS="glove",
    # Width of the GloVe vectors that rank the negatives (glove.6B.<dim>d in GLOVE_DIR); 0: the host's
    # MODEL.ROI_RELATION_HEAD.EMBED_DIM, the file the host reads for its object embeddings.
    GLOVE_DIM=0,
    # §3.2: "a fully connected layer and two multi-head attention layers" ("attention"), or one
    # fully connected layer ("linear").
    ADAPTER="linear",
    TEXT_EMBEDDINGS="",
    CLIP_MODEL="ViT-B-32",
    CLIP_PRETRAINED="openai",
    PROMPT="a photo of a {subject} {predicate} {object}",
    OBJECT_PROMPT="a photo of a {object}",
)

PROBE_DEFAULTS = dict(
    ENABLED=False,
    WEIGHT=1.0,
    RANK=128,  # k of Eq. 2
    FEATURE="edge_ctx",
    MAX_DISTANCE=4,
    CONTRAST_WEIGHT=1.0,  # the paper sums the probe and contrastive terms 1:1
    # The second view of Eq. 6: "augment" — §4.1's RoI-level augmentations (horizontal flip,
    # 90/180/270° rotation, box jitter) rerun through the context; "mask" — the context input masked
    # with MASK_PROB.
    VIEW="augment",
    PROJECTION_DIM=256,  # §3.3.2: "nonlinear projections … using MLP projection head"
    TEMPERATURE=0.1,  # tau of Eq. 6
    MASK_PROB=0.1,  # the "mask" view's masking probability
)

CLIPMATCH_DEFAULTS = dict(
    ENABLED=False,
    WEIGHT=1.0,
    PROMPT="{subject} {predicate} {object}",  # seed 003 §3.2's 'subject predicate object' string
    NULL_PROMPT="null relation",  # §3.2: matched to pairs that have no visual relationship
    TEMPERATURE=0.07,
    # A text shared by several pairs (the null text, a repeated triplet) is a column with several
    # positives. "mean": each column's cross entropy against the uniform distribution over its
    # positives, averaged over such columns (every text one vote); "sum": §3.3's L_l-CE verbatim.
    MULTI_POSITIVE="mean",
    CLIP_MODEL="ViT-B-32",
    CLIP_PRETRAINED="openai",
    TEXT_EMBEDDINGS="",
)

MRC_DEFAULTS = dict(
    ENABLED=False,
    WEIGHT=1.0,
    HIDDEN_DIM=512,  # the MLP's hidden width (seed 004 gives none)
)

# How the plug-in attaches to the host's predictor, whatever the objectives.
ADAPTER_DEFAULTS = dict(
    # Which stock SGB predictor's module layout the configured predictor follows. "" = found from
    # the class: a stock predictor or a subclass of one (a fork's or a user's). Set it for a class
    # registered under another name that is not a subclass but keeps a stock layout (a copied
    # MotifPredictor with the same attribute names).
    PREDICTOR_LAYOUT="",
    # Also print the host's training meters after every LOG_PERIOD-th iteration (0: only the host's
    # own lines, every 200 iterations, a literal in its loops): points for a short run's loss plot.
    LOG_PERIOD=0,
    # Training stops at a NaN or infinite loss, before that iteration's update and checkpoint. N > 0
    # lets up to N iterations in a row pass, their non-finite gradients dropped (the step skipped).
    MAX_NONFINITE_STEPS=0,
    # Under torch.distributed, PROBE's contrast, RCL's InfoNCE and CLIPMATCH's cross entropy take
    # their negatives from every process's batch (embeddings gathered with gradient), so that N
    # processes x B images train as one process with N x B images. False: each process's own batch.
    GATHER_NEGATIVES=True,
)

NODES = {"ALIGN": ALIGN_DEFAULTS, "RCL": RCL_DEFAULTS, "PROBE": PROBE_DEFAULTS,
         "CLIPMATCH": CLIPMATCH_DEFAULTS, "MRC": MRC_DEFAULTS}
STOCK_PREDICTORS = SUPPORTED_PREDICTORS["align"]


class ConfigError(ValueError):
    """A plug-in config value is out of range or unknown; raised before the model is built."""


def _add_node(cfg, name, defaults):
    node_cls = type(cfg)
    if name not in cfg.MODEL:
        cfg.MODEL[name] = node_cls()
    node = cfg.MODEL[name]
    for key, value in defaults.items():
        if key not in node:
            node[key] = value


def add_align_config(cfg):
    """Add ``MODEL.ALIGN`` (relation alignment, seed 002) to a yacs config."""
    _add_node(cfg, "ALIGN", ALIGN_DEFAULTS)


def add_rcl_config(cfg):
    """Add ``MODEL.RCL`` (relational contrastive learning, seed 001) to a yacs config."""
    _add_node(cfg, "RCL", RCL_DEFAULTS)


def add_probe_config(cfg):
    """Add ``MODEL.PROBE`` (relationship probe, seed 000) to a yacs config."""
    _add_node(cfg, "PROBE", PROBE_DEFAULTS)


def add_clipmatch_config(cfg):
    """Add ``MODEL.CLIPMATCH`` (CLIP predicate matching, seed 003) to a yacs config."""
    _add_node(cfg, "CLIPMATCH", CLIPMATCH_DEFAULTS)


def add_mrc_config(cfg):
    """Add ``MODEL.MRC`` (masked relation classification, seed 004) to a yacs config."""
    _add_node(cfg, "MRC", MRC_DEFAULTS)


def add_sgg_plugins_config(cfg):
    """Add every regularizer's node. Idempotent: keys already present keep their values."""
    _add_node(cfg, "SGG_PLUGINS", ADAPTER_DEFAULTS)
    add_align_config(cfg)
    add_rcl_config(cfg)
    add_probe_config(cfg)
    add_clipmatch_config(cfg)
    add_mrc_config(cfg)
    return cfg


def _fail(key, value, allowed):
    raise ConfigError(f"{key} = {value!r} is not allowed; expected {allowed}.")


def _check_choice(node, prefix, key, choices):
    if node[key] not in choices:
        _fail(f"{prefix}.{key}", node[key], "one of " + ", ".join(repr(c) for c in choices))


def _check_range(node, prefix, key, low, high, low_open=False, high_open=False):
    value = node[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        _fail(f"{prefix}.{key}", value, "a number")
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if too_low or too_high:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        _fail(f"{prefix}.{key}", value, f"a number in {left}{low}, {high}{right}")


def _check_bool(node, prefix, key):
    if not isinstance(node[key], bool):
        _fail(f"{prefix}.{key}", node[key], "True or False")


def predictor_layout(cfg):
    """The stock predictor whose layout the configured one follows, if the config alone tells:
    MODEL.SGG_PLUGINS.PREDICTOR_LAYOUT, else the predictor's own name (an ``Align`` prefix dropped)
    when it is a stock one. None for other names: the host adapter decides from the class."""
    if cfg.MODEL.SGG_PLUGINS.PREDICTOR_LAYOUT:
        return cfg.MODEL.SGG_PLUGINS.PREDICTOR_LAYOUT
    predictor = cfg.MODEL.ROI_RELATION_HEAD.PREDICTOR
    base = predictor[len("Align"):] if predictor.startswith("Align") else predictor
    return base if base in STOCK_PREDICTORS else None


def check_predictor_support(cfg, layout):
    """Raise if an enabled objective does not support the stock ``layout`` the predictor follows."""
    predictor = cfg.MODEL.ROI_RELATION_HEAD.PREDICTOR
    for node_name in NODES:
        which = node_name.lower()
        if cfg.MODEL[node_name].ENABLED and layout not in SUPPORTED_PREDICTORS[which]:
            follows = "" if layout == predictor else f" (layout {layout})"
            raise ConfigError(
                f"MODEL.{node_name}.ENABLED is True but MODEL.ROI_RELATION_HEAD.PREDICTOR = {predictor!r}"
                f"{follows} is not supported by it; supported: {', '.join(SUPPORTED_PREDICTORS[which])}."
            )


def validate_align(a):
    """Check a ``MODEL.ALIGN`` node (any host's config class); one-line :class:`ConfigError`."""
    p = "MODEL.ALIGN"
    for key in ("ENABLED", "USE_FREQ_BIAS", "DETACH_INPUT"):
        _check_bool(a, p, key)
    _check_range(a, p, "MASK_PROB", 0.0, 1.0, high_open=True)
    _check_range(a, p, "WEIGHT", 0.0, float("inf"))
    _check_range(a, p, "SUPERVISED_WEIGHT", 0.0, float("inf"))
    _check_choice(a, p, "MASK_UNIT", MASK_UNITS)
    _check_choice(a, p, "KL_REDUCTION", KL_REDUCTIONS)
    if not isinstance(a.HEAD_HIDDEN_DIM, int) or isinstance(a.HEAD_HIDDEN_DIM, bool) or a.HEAD_HIDDEN_DIM < 0:
        _fail("MODEL.ALIGN.HEAD_HIDDEN_DIM", a.HEAD_HIDDEN_DIM, "a non-negative integer (0: the pair feature's width)")
    _check_choice(a, p, "HEAD", ALIGN_HEADS)
    _check_choice(a, p, "LOSS", ALIGN_LOSSES)
    _check_choice(a, p, "TARGET", ALIGN_TARGETS)
    _check_choice(a, p, "KL_DIRECTION", KL_DIRECTIONS)


def validate_rcl(r):
    """Check a ``MODEL.RCL`` node (any host's config class); one-line :class:`ConfigError`."""
    p = "MODEL.RCL"
    for key in ("ENABLED", "WEIGHTED_NEGATIVES", "DETACH_INPUT", "LEARN_TEMPERATURE"):
        _check_bool(r, p, key)
    _check_choice(r, p, "PLACEMENT", RCL_PLACEMENTS)
    _check_range(r, p, "WEIGHT", 0.0, float("inf"))
    _check_choice(r, p, "LEVELS", RCL_LEVELS)
    _check_range(r, p, "TEMPERATURE", 0.0, float("inf"), low_open=True)
    _check_range(r, p, "GAMMA", 0.0, 1.0)
    _check_range(r, p, "SYNONYM_THRESHOLD", -1.0, 1.0)
    _check_range(r, p, "MIN_SIMILARITY", -1.0, 1.0)
    if r.MIN_SIMILARITY > r.SYNONYM_THRESHOLD:
        raise ConfigError(
            f"MODEL.RCL.MIN_SIMILARITY ({r.MIN_SIMILARITY}) must not exceed "
            f"MODEL.RCL.SYNONYM_THRESHOLD ({r.SYNONYM_THRESHOLD}): no negative could remain."
        )
    _check_positive_int(r, p, "EMBED_DIM")
    _check_choice(r, p, "SAMPLING_EMBEDDINGS", RCL_SAMPLING_EMBEDDINGS)
    if not isinstance(r.GLOVE_DIM, int) or isinstance(r.GLOVE_DIM, bool) or r.GLOVE_DIM < 0:
        _fail("MODEL.RCL.GLOVE_DIM", r.GLOVE_DIM, "0 (the host's MODEL.ROI_RELATION_HEAD.EMBED_DIM) or a GloVe width")
    _check_choice(r, p, "ADAPTER", RCL_ADAPTERS)
    for key in ("PROMPT", "OBJECT_PROMPT"):
        _check_prompt(r, p, key)


def validate_probe(b):
    """Check a ``MODEL.PROBE`` node (any host's config class); one-line :class:`ConfigError`."""
    p = "MODEL.PROBE"
    _check_bool(b, p, "ENABLED")
    _check_range(b, p, "WEIGHT", 0.0, float("inf"))
    _check_positive_int(b, p, "RANK")
    _check_choice(b, p, "FEATURE", PROBE_FEATURES)
    _check_positive_int(b, p, "MAX_DISTANCE")
    _check_range(b, p, "CONTRAST_WEIGHT", 0.0, float("inf"))
    _check_range(b, p, "TEMPERATURE", 0.0, float("inf"), low_open=True)
    _check_range(b, p, "MASK_PROB", 0.0, 1.0, high_open=True)
    _check_choice(b, p, "VIEW", PROBE_VIEWS)
    _check_positive_int(b, p, "PROJECTION_DIM")


def validate_clipmatch(c):
    """Check a ``MODEL.CLIPMATCH`` node (any host's config class); one-line :class:`ConfigError`."""
    p = "MODEL.CLIPMATCH"
    _check_bool(c, p, "ENABLED")
    _check_range(c, p, "WEIGHT", 0.0, float("inf"))
    _check_range(c, p, "TEMPERATURE", 0.0, float("inf"), low_open=True)
    _check_choice(c, p, "MULTI_POSITIVE", ("mean", "sum"))
    _check_prompt(c, p, "PROMPT")
    if not isinstance(c.NULL_PROMPT, str) or not c.NULL_PROMPT.strip():
        _fail("MODEL.CLIPMATCH.NULL_PROMPT", c.NULL_PROMPT, "a non-empty text")


def validate_mrc(m):
    """Check a ``MODEL.MRC`` node (any host's config class); one-line :class:`ConfigError`."""
    p = "MODEL.MRC"
    _check_bool(m, p, "ENABLED")
    _check_range(m, p, "WEIGHT", 0.0, float("inf"))
    _check_positive_int(m, p, "HIDDEN_DIM")


VALIDATORS = {"ALIGN": validate_align, "RCL": validate_rcl, "PROBE": validate_probe,
              "CLIPMATCH": validate_clipmatch, "MRC": validate_mrc}


def validate_config(cfg):
    """Check every plug-in key of ``cfg``; raise :class:`ConfigError` naming the key and allowed values.

    Only enabled regularizers are checked against the predictor, but all values are range-checked
    so that a typo in a disabled node is still caught when it is switched on from the command line.
    A predictor name that is not a stock one is checked when the model is built, from its class.
    """
    layout = cfg.MODEL.SGG_PLUGINS.PREDICTOR_LAYOUT
    if layout and layout not in STOCK_PREDICTORS:
        _fail("MODEL.SGG_PLUGINS.PREDICTOR_LAYOUT", layout, "'' or one of " + ", ".join(STOCK_PREDICTORS))
    log_period = cfg.MODEL.SGG_PLUGINS.LOG_PERIOD
    if not isinstance(log_period, int) or isinstance(log_period, bool) or log_period < 0:
        _fail("MODEL.SGG_PLUGINS.LOG_PERIOD", log_period, "0 (the host's own period) or a positive integer")
    max_nonfinite = cfg.MODEL.SGG_PLUGINS.MAX_NONFINITE_STEPS
    if not isinstance(max_nonfinite, int) or isinstance(max_nonfinite, bool) or max_nonfinite < 0:
        _fail("MODEL.SGG_PLUGINS.MAX_NONFINITE_STEPS", max_nonfinite,
              "0 (stop at the first non-finite loss) or a positive integer")
    if not isinstance(cfg.MODEL.SGG_PLUGINS.GATHER_NEGATIVES, bool):
        _fail("MODEL.SGG_PLUGINS.GATHER_NEGATIVES", cfg.MODEL.SGG_PLUGINS.GATHER_NEGATIVES, "True or False")
    for node, validate_node in VALIDATORS.items():
        validate_node(cfg.MODEL[node])
    layout = predictor_layout(cfg)
    if layout is not None:
        check_predictor_support(cfg, layout)


def _check_prompt(node, prefix, key):
    fields = {"PROMPT": ("{subject}", "{predicate}", "{object}"), "OBJECT_PROMPT": ("{object}",)}[key]
    missing = [f for f in fields if f not in node[key]]
    if missing:
        _fail(f"{prefix}.{key}", node[key], "a template containing " + ", ".join(fields))


def _check_positive_int(node, prefix, key):
    value = node[key]
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        _fail(f"{prefix}.{key}", value, "a positive integer")


def any_enabled(cfg):
    return any(cfg.MODEL[name].ENABLED for name in NODES if name in cfg.MODEL)
