"""MODEL.RCL against the baseline on the real SGB host: step time, memory and eval time ratios, before and after.

    sgg-plugins embed --dict-file DATA/VG-SGG-dicts-with-attri.json --roidb-file DATA/VG-SGG-with-attri.h5 \
        --clip-model ViT-B-32 --clip-pretrained CHECKPOINT --out emb.pt
    SGB_ROOT=... python benchmarks/rcl_overhead.py --config-file $SGB_ROOT/configs/e2e_relation_X_101_32_8_FPN_1x.yaml \
        -- $(cat configs/sgb/synthetic_cpu.opts) $(cat DATA/dataset.opts) MODEL.RCL.TEXT_EMBEDDINGS emb.pt \
        MODEL.RCL.CLIP_PRETRAINED CHECKPOINT MODEL.RCL.SAMPLING_EMBEDDINGS clip

"rcl" is the linear adapter (the earlier code's, now with the text bank of every training
triplet); "rcl attention" the §3.2 adapter (a fully connected layer and two multi-head attention
layers). GloVe and CLIP sampling cost the same in a step (a table lookup), so without a GloVe file
the runs rank by CLIP (SAMPLING_EMBEDDINGS clip). Goal (issue 4): step <= 1.10x. The loss alone is
timed by rcl_loss.py.
"""

from sgb_overhead import compare

if __name__ == "__main__":
    compare({"baseline": [], "rcl": ["MODEL.RCL.ENABLED", "True"],
             "rcl attention": ["MODEL.RCL.ENABLED", "True", "MODEL.RCL.ADAPTER", "attention"]},
            __doc__.splitlines()[0])
