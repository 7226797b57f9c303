"""MODEL.PROBE against the baseline on the real SGB host: step time, memory and eval time ratios.

    SGB_ROOT=... python benchmarks/probe_overhead.py --config-file $SGB_ROOT/configs/e2e_relation_X_101_32_8_FPN_1x.yaml \
        -- $(cat configs/sgb/synthetic_cpu.opts) $(cat DATA/dataset.opts)

Goal (issue 5): step <= 1.05x. The loss alone is timed by probe_loss.py.
"""

from sgb_overhead import compare

if __name__ == "__main__":
    compare({"baseline": [], "probe": ["MODEL.PROBE.ENABLED", "True"],
             "probe+align": ["MODEL.PROBE.ENABLED", "True", "MODEL.ALIGN.ENABLED", "True"]},
            __doc__.splitlines()[0])
