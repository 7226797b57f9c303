"""MODEL.PROBE against the baseline on the real SGB host: step time, memory and eval time ratios, and the
contrastive term near initialisation, before (issue 9) and after.

    SGB_ROOT=... python benchmarks/probe_overhead.py --config-file $SGB_ROOT/configs/e2e_relation_X_101_32_8_FPN_1x.yaml \
        --predictors MotifPredictor TransformerPredictor -- $(cat configs/sgb/synthetic_cpu.opts) $(cat DATA/dataset.opts)

"probe (before)" is the earlier default's view and weight: the second view a p = 0.1 masked context
input, CONTRAST_WEIGHT 0.5 (the earlier code also had no projection head; today's always has one). "probe" is today's default: the augmented view (§4.1), the
MLP projection head (§3.3.2), CONTRAST_WEIGHT 1.0. The contrast is printed as the mean of the
timed steps (the first steps from initialisation) against chance ln(2B − 1), B = SOLVER.IMS_PER_BATCH.
Goal (issue 5): step <= 1.05x. The loss alone is timed by probe_loss.py.
"""

import math

from sgb_overhead import compare

if __name__ == "__main__":
    results = compare({"baseline": [],
                       "probe (before)": ["MODEL.PROBE.ENABLED", "True", "MODEL.PROBE.VIEW", "mask",
                                          "MODEL.PROBE.CONTRAST_WEIGHT", "0.5"],
                       "probe": ["MODEL.PROBE.ENABLED", "True"],
                       "probe+align": ["MODEL.PROBE.ENABLED", "True", "MODEL.ALIGN.ENABLED", "True"]},
                      __doc__.splitlines()[0])
    for key, row in results.items():
        if "loss_probe_contrast" in row["losses"]:
            weight = 0.5 if "before" in key else 1.0
            print(f"{key:38s} loss_probe_contrast / CONTRAST_WEIGHT = {row['losses']['loss_probe_contrast'] / weight:.3f}"
                  f"   loss_probe = {row['losses']['loss_probe']:.3f}")
    print(f"chance ln(2B - 1): B = 2 -> {math.log(3):.3f}, B = 4 -> {math.log(7):.3f}, B = 12 -> {math.log(23):.3f}")
