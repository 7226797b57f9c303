"""The compatibility layer's distributed shims on a machine without a GPU (host-free)."""

import types

import pytest
import torch
import torch.distributed as dist

from sgg_plugins.hosts.sgb import compat

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU behaviour")


def as_host(source, **names):
    """Run ``source`` as if written in a host module, so the host-scoped shims see a host caller."""
    namespace = {"__name__": "maskrcnn_benchmark.tools_stand_in", **names}
    exec(source, namespace)
    return namespace.get("result")


@pytest.fixture
def process_group(tmp_path):
    """Starts a one-process group the way the host does (backend "nccl") and tears it down."""
    compat.install_compat()
    as_host("torch.distributed.init_process_group(backend='nccl', init_method=url, rank=0, world_size=1)",
            torch=torch, url=f"file://{tmp_path / 'store'}")
    yield
    dist.destroy_process_group()


def test_set_device_is_a_no_op_for_host_code_only():
    compat.install_compat()
    assert as_host("result = torch.cuda.set_device(1)", torch=torch) is None
    with pytest.raises((RuntimeError, AssertionError)):
        torch.cuda.set_device(1)  # anyone else still learns there is no GPU


def test_host_nccl_process_group_runs_on_gloo(process_group):
    assert dist.get_backend() == "gloo"
    tensor = torch.tensor([3.0])
    dist.all_reduce(tensor)  # a collective the host's loss reduction uses, on a CPU tensor
    assert tensor.item() == 3.0


def test_other_callers_keep_the_backend_they_ask_for(tmp_path):
    compat.install_compat()
    with pytest.raises((RuntimeError, ValueError), match="(?i)nccl"):
        dist.init_process_group(backend="nccl", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    if dist.is_initialized():
        dist.destroy_process_group()


def test_ddp_accepts_a_cpu_model_with_the_hosts_device_ids(process_group):
    model = torch.nn.Linear(3, 2)
    wrapped = torch.nn.parallel.DistributedDataParallel(model, device_ids=[0], output_device=0,
                                                        broadcast_buffers=False, find_unused_parameters=True)
    assert isinstance(wrapped, torch.nn.parallel.distributed.DistributedDataParallel)  # still the original's type
    wrapped(torch.ones(1, 3)).sum().backward()
    torch.testing.assert_close(model.bias.grad, torch.ones(2))


def test_all_gather_objects_returns_every_ranks_object(process_group):
    payload = {"image 7": torch.arange(3)}
    (gathered,) = compat.all_gather_objects(payload)
    assert gathered.keys() == payload.keys() and torch.equal(gathered["image 7"], payload["image 7"])


def test_host_modules_holding_all_gather_get_the_replacement(monkeypatch):
    original = lambda data: ["cuda"]  # noqa: E731
    comm = types.ModuleType("maskrcnn_benchmark.utils.comm")
    comm.all_gather = original
    inference = types.ModuleType("maskrcnn_benchmark.engine.inference")
    inference.all_gather = original  # bound by ``from ..utils.comm import all_gather``
    utils = types.ModuleType("maskrcnn_benchmark.utils")
    utils.comm = comm
    for module in (comm, inference, utils):
        monkeypatch.setitem(__import__("sys").modules, module.__name__, module)
    compat._install_host_all_gather()
    assert comm.all_gather is compat.all_gather_objects and inference.all_gather is compat.all_gather_objects
