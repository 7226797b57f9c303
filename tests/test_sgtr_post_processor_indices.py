"""The SGTR compat shim for the relation post-processor's cross-device indexing, without the host.

On a GPU, SGTR's ``RelPostProcess.forward`` moves its triplets to the CPU and indexes them with a
mask left on the GPU. ``emulated_cuda.py`` applies ATen's device rule for indices to tensors that
report ``cuda:0``, so the failure and its fix are reproduced here without a GPU; the real host's
forward is checked the same way in ``test_sgtr_host_post_processor.py``.
"""

import sys

import pytest
import torch
from emulated_cuda import OnCuda, emulated_cuda, to_cuda

from sgg_plugins.hosts.sgtr import compat


def host_pattern(pred_rel_triplet):
    """What the host does: a mask on the predictions' device, the triplets moved to the CPU, indexed
    by the mask; then a selection mask built on the device and written through an index."""
    non_self_conn_idx = pred_rel_triplet[:, 0] != pred_rel_triplet[:, 1]
    on_cpu = pred_rel_triplet.to("cpu")
    kept = on_cpu[non_self_conn_idx]
    bin_mask = torch.zeros(kept.shape[0], dtype=torch.bool).to(pred_rel_triplet.device)
    bin_mask[torch.tensor([0, 2]).to(pred_rel_triplet.device)] = True
    selected = kept[bin_mask]
    on_cpu[non_self_conn_idx] = -1.0
    return selected, on_cpu


TRIPLETS = torch.tensor([[0, 1, 0.5], [2, 2, 0.4], [1, 3, 0.3], [3, 0, 0.2], [4, 4, 0.1]])


def test_the_hosts_indexing_fails_on_cuda_without_the_shim():
    with emulated_cuda(), pytest.raises(RuntimeError, match=r"indices should be either on cpu or on the same "
                                                            r"device as the indexed tensor \(cpu\)"):
        host_pattern(to_cuda(TRIPLETS))


def test_with_the_shim_the_index_follows_the_indexed_tensor_and_the_result_is_the_cpus():
    expected = host_pattern(TRIPLETS.clone())  # on the CPU .to("cpu") is the tensor itself, written to
    with emulated_cuda(), compat.IndicesFollowTheIndexedTensor():
        got = host_pattern(to_cuda(TRIPLETS))
    for a, b in zip(got, expected):
        assert a.device.type == "cpu" and torch.equal(a, b)


def test_only_an_index_pytorch_would_refuse_moves():
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    with emulated_cuda():
        mask = to_cuda(torch.tensor([True, False]))
        assert compat._refused_index(mask, cpu)
        assert not compat._refused_index(mask, cuda)  # same device
        assert not compat._refused_index(torch.tensor([True, False]), cuda)  # a CPU index is always allowed
        assert not compat._refused_index(to_cuda(torch.tensor([0.5])), cpu)  # not an index: PyTorch's own error
        moved = compat._follow((slice(None), mask), cpu)
        assert moved[0] == slice(None) and not isinstance(moved[1], OnCuda) and torch.equal(moved[1], mask.cpu())


def test_the_forward_runs_under_the_mode_only_off_the_cpu():
    modes = []

    def forward(self, outputs, *args):
        modes.append([type(m) for m in torch.overrides._get_current_function_mode_stack()])
        return outputs["pred_rel_vec"].sum()

    wrapped = compat.indices_follow_the_indexed_tensor(forward)
    assert wrapped.sgg_plugins_original is forward
    vec = torch.ones(2, 4)
    assert wrapped(None, {"pred_rel_vec": vec}) == 8
    with emulated_cuda():
        wrapped(None, {"pred_rel_vec": to_cuda(vec)})
    assert modes == [[], [compat.IndicesFollowTheIndexedTensor]]


def test_the_post_processor_module_is_patched_when_it_is_imported(tmp_path, monkeypatch):
    name = "sgg_plugins_test_rel_detr_inference"
    (tmp_path / f"{name}.py").write_text(
        "class RelPostProcess:\n    def forward(self, outputs):\n        return 'host'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    finder = compat.PatchAfterImport(name, compat._wrap_post_processor)
    monkeypatch.setattr(sys, "meta_path", [finder, *sys.meta_path])
    monkeypatch.delitem(sys.modules, name, raising=False)
    module = __import__(name)
    forward = module.RelPostProcess.forward
    assert forward.sgg_plugins_original.__module__ == name  # the host's code, run by its own loader
    assert module.RelPostProcess().forward({"pred_rel_vec": torch.zeros(1)}) == "host"
    compat._wrap_post_processor(module)  # a second patch keeps the first wrapper
    assert module.RelPostProcess.forward is forward
