#!/usr/bin/env bash
# The command that produced this folder's report: Motifs PredCls on the synthetic VG-format data
# with the small CPU overlay, baseline against each regularizer and all three, 3 seeds each.
#   SGB_ROOT=/path/to/Scene-Graph-Benchmark.pytorch bash docs/synthetic_bench/run.sh [WORK_DIR]
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
work="${1:-$PWD/synthetic_bench_work}"
: "${SGB_ROOT:?set SGB_ROOT to an SGB checkout}"
mkdir -p "$work"

sgg-plugins make-synthetic-vg "$work/data" --seed 0 --overwrite
python "$repo/docs/synthetic_bench/make_random_clip.py" "$work/clip"
sgg-plugins embed --dict-file "$work/data/VG-SGG-dicts-with-attri.json" --roidb-file "$work/data/VG-SGG-with-attri.h5" \
    --clip-model "local-dir:$work/clip" --out "$work/text_embeddings.pt" --device cpu

sgg-plugins bench --config-file "$SGB_ROOT/configs/e2e_relation_X_101_32_8_FPN_1x.yaml" --out "$work/bench" \
    --variants baseline align rcl probe all --seeds 0 1 2 --jobs 1 --cwd "$work" -- \
    $(cat "$repo/configs/sgb/synthetic_cpu.opts") $(cat "$work/data/dataset.opts") \
    MODEL.ROI_RELATION_HEAD.USE_GT_BOX True MODEL.ROI_RELATION_HEAD.USE_GT_OBJECT_LABEL True \
    MODEL.ROI_RELATION_HEAD.PREDICTOR MotifPredictor \
    SOLVER.MAX_ITER 60 SOLVER.CHECKPOINT_PERIOD 60 SOLVER.VAL_PERIOD 1000 \
    MODEL.RCL.TEXT_EMBEDDINGS "$work/text_embeddings.pt" MODEL.RCL.CLIP_MODEL "local-dir:$work/clip"

sgg-plugins report "$work/bench" --out "$repo/docs/synthetic_bench"
