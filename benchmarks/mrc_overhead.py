"""MODEL.MRC against the baseline on the real SGB host: step, predictor-forward, memory and eval ratios.

    SGB_ROOT=... python benchmarks/mrc_overhead.py --config-file $SGB_ROOT/configs/e2e_relation_X_101_32_8_FPN_1x.yaml \
        --predictors MotifPredictor VCTreePredictor TransformerPredictor IMPPredictor \
        -- $(cat configs/sgb/synthetic_cpu.opts) $(cat DATA/dataset.opts)

The predictor-forward ratio holds MRC's extra pass: the host's object context once more, on
one-object images (VCTree's tree-LSTMs and IMP's per-image loop run once per object there).
"""

from sgb_overhead import compare

if __name__ == "__main__":
    compare({"baseline": [], "mrc": ["MODEL.MRC.ENABLED", "True"]}, __doc__.splitlines()[0])
