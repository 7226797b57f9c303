"""MODEL.CLIPMATCH against the baseline on the real SGB host: step, predictor-forward, memory and eval ratios.

    sgg-plugins embed-candidates --dict-file DATA/VG-SGG-dicts-with-attri.json --roidb-file DATA/VG-SGG-with-attri.h5 \
        --clip-model ViT-B-32 --clip-pretrained CHECKPOINT --out candidates.pt
    SGB_ROOT=... python benchmarks/clipmatch_overhead.py --config-file $SGB_ROOT/configs/e2e_relation_X_101_32_8_FPN_1x.yaml \
        --predictors MotifPredictor VCTreePredictor TransformerPredictor IMPPredictor \
        -- $(cat configs/sgb/synthetic_cpu.opts) $(cat DATA/dataset.opts) MODEL.CLIPMATCH.TEXT_EMBEDDINGS candidates.pt \
        MODEL.CLIPMATCH.CLIP_MODEL ViT-B-32 MODEL.CLIPMATCH.CLIP_PRETRAINED CHECKPOINT

The loss alone is timed by clipmatch_loss.py.
"""

from sgb_overhead import compare

if __name__ == "__main__":
    compare({"baseline": [], "clipmatch": ["MODEL.CLIPMATCH.ENABLED", "True"]}, __doc__.splitlines()[0])
