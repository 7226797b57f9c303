"""SGTR's relation post-processor on the real model, on the CPU and on emulated CUDA, in a fresh process.

    python tests/sgtr_post_processor_worker.py '{"vg_dir": ..., "run_dir": ..., "opts": [KEY, VALUE, ...]}'

Run by ``test_sgtr_host_post_processor.py``. The model is built from SGTR's VG experiment through
the launcher's preparation (so with every compat shim), and one eval forward on the first batch of
the host's train loader records what the model passes to ``post_processors["rel"]``. The entity
boxes are then spread over the image (random weights decode every query to nearly one box, and the
host's self-connection filter would drop every relation: the masks under test would be all False).
The post-processor is called on those inputs four ways: the host's own forward and the shimmed one
on the CPU, the shim's indexing mode around the host's forward on the CPU, and on emulated CUDA
(``emulated_cuda.py``) the host's own forward (expected to fail as it does on a GPU) and the shimmed
one. Prints one JSON line: the shims applied, whether the outputs are bit-identical, the error of
the host's own forward on emulated CUDA and the host line that raised it.
"""

import json
import os
import sys
import traceback

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def spread_entity_boxes(det_res, target_sizes, generator):
    """Each image's entity boxes replaced by random distinct boxes inside the image, normalised
    (``boxes_norm``, xyxy in [0, 1]) and in pixels (``boxes``), as the host's PostProcess gives them."""
    import torch

    for det, (height, width) in zip(det_res, target_sizes.tolist()):
        corner = torch.rand(det["boxes"].shape[0], 2, generator=generator) * 0.6
        size = torch.rand(det["boxes"].shape[0], 2, generator=generator) * 0.3 + 0.1
        det["boxes_norm"] = torch.cat([corner, corner + size], 1)
        det["boxes"] = det["boxes_norm"] * torch.tensor([width, height, width, height], dtype=torch.float32)
    return det_res


def same(a, b):
    """Bit-identical nested outputs (lists of dicts of tensors)."""
    import torch

    if isinstance(a, torch.Tensor):
        return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def on_cpu(value):
    import torch
    from torch.utils._pytree import tree_map

    return tree_map(lambda t: t.cpu() if isinstance(t, torch.Tensor) else t, value)


def main():
    job = json.loads(sys.argv[1])
    sys.path[:0] = [REPO, os.path.join(REPO, "tests")]
    os.chdir(job["run_dir"])
    from sgg_plugins.hosts.sgtr.launch import apply_environment, prepare, resolve_settings, with_class_counts

    settings = resolve_settings("train_net", {"--vg-dir": job["vg_dir"]})
    apply_environment(settings)
    opts = with_class_counts(job["opts"], job["vg_dir"])
    prepare(settings, opts)
    from config import config

    import net
    import torch
    from cvpods.data import build_detection_train_loader
    from cvpods.modeling.meta_arch.one_stage_sgg.rel_detr_inference import RelPostProcess
    from emulated_cuda import emulated_cuda, to_cuda

    from sgg_plugins.hosts.sgtr import compat

    config.merge_from_list(opts)
    torch.manual_seed(0)
    batch = next(iter(build_detection_train_loader(config)))
    model = net.build_model(config)
    model.eval()
    post_processor = model.post_processors["rel"]
    calls = []
    post_processor.register_forward_pre_hook(lambda module, args: calls.append(args))
    with torch.no_grad():
        model(batch)
    outputs, det_res, target_sizes = calls[0]
    det_res = spread_entity_boxes(det_res, target_sizes, torch.Generator().manual_seed(0))

    shimmed = RelPostProcess.forward
    host_forward = shimmed.sgg_plugins_original
    reference = host_forward(post_processor, outputs, det_res, target_sizes)
    result = {
        "applied": compat.install_compat(settings["host_root"]),
        "relations_kept": [len(image["rel_trp"]) for image in reference[0]],
        "relations_proposed": [len(image["rel_trp"]) for image in reference[1]],
        "cpu_shimmed_identical": same(shimmed(post_processor, outputs, det_res, target_sizes), reference),
    }
    with compat.IndicesFollowTheIndexedTensor():
        result["cpu_mode_identical"] = same(host_forward(post_processor, outputs, det_res, target_sizes), reference)
    with emulated_cuda():
        inputs = to_cuda((outputs, det_res, target_sizes))
        try:
            host_forward(post_processor, *inputs)
            result["cuda_host_error"] = None
        except RuntimeError as error:
            frame = next(f for f in reversed(traceback.extract_tb(error.__traceback__))
                         if f.filename.endswith("rel_detr_inference.py"))
            result["cuda_host_error"] = str(error)
            result["cuda_host_error_line"] = frame.line
        cuda_output = shimmed(post_processor, *inputs)
        result["cuda_devices"] = {key: sorted({str(image[key].device) for image in cuda_output[0]})
                                  for key in cuda_output[0][0]}
        result["cuda_shimmed_identical"] = same(on_cpu(cuda_output), reference)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
