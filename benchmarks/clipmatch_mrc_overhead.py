"""MODEL.CLIPMATCH and MODEL.MRC against the baseline on the real SGB host, in one run: step,
relation-predictor forward, memory and eval ratios (see sgb_overhead.py for how).

    sgg-plugins embed-candidates --dict-file DATA/VG-SGG-dicts-with-attri.json --roidb-file DATA/VG-SGG-with-attri.h5 \
        --clip-model ViT-B-32 --clip-pretrained CHECKPOINT --out candidates.pt
    SGB_ROOT=... python benchmarks/clipmatch_mrc_overhead.py --config-file $SGB_ROOT/configs/e2e_relation_X_101_32_8_FPN_1x.yaml \
        --predictors MotifPredictor VCTreePredictor TransformerPredictor IMPPredictor \
        -- $(cat configs/sgb/synthetic_cpu.opts) $(cat DATA/dataset.opts) MODEL.CLIPMATCH.TEXT_EMBEDDINGS candidates.pt \
        MODEL.CLIPMATCH.CLIP_MODEL ViT-B-32 MODEL.CLIPMATCH.CLIP_PRETRAINED CHECKPOINT

The predictor-forward ratio holds what each adds inside the predictor: CLIPMATCH's head and table
(no extra pass), MRC's extra pass of the object context on one-object images (VCTree's tree-LSTMs
and IMP's per-image loop run once per object there). The loss of CLIPMATCH alone is timed by
clipmatch_loss.py, the bank's one-time cost by clipmatch_bank_cost.py.
"""

from sgb_overhead import compare

if __name__ == "__main__":
    compare({"baseline": [], "clipmatch": ["MODEL.CLIPMATCH.ENABLED", "True"], "mrc": ["MODEL.MRC.ENABLED", "True"]},
            __doc__.splitlines()[0])
