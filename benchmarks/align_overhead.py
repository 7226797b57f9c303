"""MODEL.ALIGN against the baseline on the real SGB host: step time, memory and eval time ratios.

    SGB_ROOT=... python benchmarks/align_overhead.py --config-file $SGB_ROOT/configs/e2e_relation_X_101_32_8_FPN_1x.yaml \
        --predictors MotifPredictor VCTreePredictor TransformerPredictor IMPPredictor CausalAnalysisPredictor \
        -- $(cat configs/sgb/synthetic_cpu.opts) $(cat DATA/dataset.opts)

Goal (issue 3): Motifs step <= 1.25x, memory <= 1.15x, eval 1.00x.
"""

from sgb_overhead import compare

if __name__ == "__main__":
    compare({"baseline": [], "align": ["MODEL.ALIGN.ENABLED", "True"]}, __doc__.splitlines()[0])
