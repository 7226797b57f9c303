"""One training forward and backward of the real SGTR model with MODEL.ALIGN, in a fresh process.

    python tests/sgtr_align_worker.py '{"vg_dir": ..., "run_dir": ..., "variants": {name: opts},
                                        "declared": {name: module paths}}'

Run by ``test_sgtr_host.py`` (the host's ``cvpods`` must be imported in a process of its own, after
the plug-in's shims). For each variant (a list of ``KEY VALUE`` opts: the CPU overlay, then the
variant's own), the model is built from SGTR's VG experiment through the launcher's preparation,
with the host's frozen modules frozen as its trainer does, and runs one training forward on the
first batch of the host's own train loader; ``loss_align_*`` alone is back-propagated. Every variant sets the
same keys (the config object is merged once per variant). Prints one JSON line: per variant the
loss dict, the parameters with a non-zero gradient, the parameters of the variant's ``declared``
module paths (each once, as ``named_parameters`` names it), and every call of the host's relation
criterion (the predictions' keys, its loss terms).
"""

import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_variant(config, net, opts, vg_dir, declared):
    import torch
    from cvpods.data import build_detection_train_loader
    from cvpods.engine.trainer import fix_eval_modules

    config.merge_from_list(opts)
    torch.manual_seed(0)
    batch = next(iter(build_detection_train_loader(config)))
    model = net.build_model(config)
    fix_eval_modules(model, config.MODEL.WEIGHTS_FIXED)
    model.train()
    calls = []
    model.rel_criterion.register_forward_hook(
        lambda module, args, kwargs, out: calls.append({
            "keys": sorted(args[0]),
            "terms": {k: float(v) for k, v in out[0].items() if k.startswith("loss_")}}), with_kwargs=True)
    losses = model(batch)
    model.zero_grad(set_to_none=True)
    sum(v for k, v in losses.items() if k.startswith("loss_align")).backward()
    declared_ids = {id(p) for path in declared for p in model.get_submodule(path).parameters()}
    return {
        "losses": {k: float(v) for k, v in losses.items()},
        "requires_grad": sorted(k for k, v in losses.items() if v.requires_grad),
        "touched": sorted(n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0),
        "declared": sorted(n for n, p in model.named_parameters() if id(p) in declared_ids),
        "criterion_calls": calls,
    }


def main():
    job = json.loads(sys.argv[1])
    sys.path.insert(0, REPO)
    os.chdir(job["run_dir"])
    from sgg_plugins.hosts.sgtr.launch import apply_environment, prepare, resolve_settings, with_class_counts

    settings = resolve_settings("train_net", {"--vg-dir": job["vg_dir"]})
    apply_environment(settings)
    variants = {name: with_class_counts(opts, job["vg_dir"]) for name, opts in job["variants"].items()}
    prepare(settings, next(iter(variants.values())))
    from config import config

    import net

    results = {name: run_variant(config, net, opts, job["vg_dir"], job["declared"][name])
               for name, opts in variants.items()}
    print(json.dumps(results))


if __name__ == "__main__":
    main()
