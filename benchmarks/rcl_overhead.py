"""MODEL.RCL against the baseline on the real SGB host: step time, memory and eval time ratios.

    sgg-plugins embed --dict-file DATA/VG-SGG-dicts-with-attri.json --roidb-file DATA/VG-SGG-with-attri.h5 \
        --clip-model ViT-B-32 --clip-pretrained CHECKPOINT --out emb.pt
    SGB_ROOT=... python benchmarks/rcl_overhead.py --config-file $SGB_ROOT/configs/e2e_relation_X_101_32_8_FPN_1x.yaml \
        -- $(cat configs/sgb/synthetic_cpu.opts) $(cat DATA/dataset.opts) MODEL.RCL.TEXT_EMBEDDINGS emb.pt \
        MODEL.RCL.CLIP_PRETRAINED CHECKPOINT

Goal (issue 4): step <= 1.10x. The loss alone is timed by rcl_loss.py.
"""

from sgb_overhead import compare

if __name__ == "__main__":
    compare({"baseline": [], "rcl": ["MODEL.RCL.ENABLED", "True"]}, __doc__.splitlines()[0])
