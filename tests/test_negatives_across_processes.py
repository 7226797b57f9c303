"""Contrastive negatives across processes (``MODEL.SGG_PLUGINS.GATHER_NEGATIVES``, issue 21).

For PROBE's contrast, RCL's InfoNCE and CLIPMATCH's cross entropy: 2 processes (gloo, CPU) with
one image each give the loss and, after DDP's average over processes, the parameter gradients of
one process with both images; the gradient reaching each process's own input features is
``world_size`` times the single process's (DDP then averages the host's parameters as above).
Without gathering, or with one process and one image, the contrast has no negatives and says so.
"""

import logging
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import fake_sgb
from test_clipmatch_core import DIM, make_bank
from test_rcl_loss import TEXT_DIM, random_bank

from sgg_plugins.config import ConfigError, add_sgg_plugins_config, validate_config
from sgg_plugins.regularizers import distributed
from sgg_plugins.regularizers.clipmatch import PredicateMatchingLoss
from sgg_plugins.regularizers.probe import RelationshipProbeLoss
from sgg_plugins.regularizers.rcl import RelationalContrastiveLoss

WORLD = 2
OBJ_DIM, REL_DIM = 8, 7


def probe_case(head):
    """Two images of 5 and 4 objects (different padded sizes: the layout without a head must agree)."""
    gen = torch.Generator().manual_seed(0)
    num_objs = [5, 4]
    images = []
    for n in num_objs:
        pairs = torch.tensor([[i, i + 1] for i in range(n - 1)])
        images.append(dict(features_clean=torch.randn(n, OBJ_DIM, generator=gen),
                           features_view2=torch.randn(n, OBJ_DIM, generator=gen), num_objs=[n], rel_pairs=[pairs]))
    torch.manual_seed(1)
    module = RelationshipProbeLoss(OBJ_DIM, rank=4, projection_dim=6 if head else 0, max_objects=5)

    def loss(module, image):
        return module(image["features_clean"], image["num_objs"], image["rel_pairs"],
                      image["features_view2"])["loss_probe_contrast"]

    return module, images, loss, ("features_clean", "features_view2")


def rcl_case(level):
    triplets = [(1, 1, 2), (1, 2, 3), (4, 3, 1), (2, 1, 5), (3, 4, 2)]
    bank, _ = random_bank(triplets)
    gen = torch.Generator().manual_seed(2)
    labels = [torch.tensor(column) for column in zip(*triplets)]
    images = []
    for rows in ([0, 1, 2], [3, 4, 1, 0]):  # a triplet shared across the two images
        rows = torch.tensor(rows)
        images.append(dict(rel_feats=torch.randn(len(rows), REL_DIM, generator=gen),
                           subj_feats=torch.randn(len(rows), OBJ_DIM, generator=gen),
                           obj_feats=torch.randn(len(rows), OBJ_DIM, generator=gen),
                           labels=[label[rows] for label in labels]))
    torch.manual_seed(3)
    module = RelationalContrastiveLoss(REL_DIM, OBJ_DIM, TEXT_DIM, embed_dim=6, level=level, learn_temperature=True)

    def loss(module, image):
        return module(image["rel_feats"], image["subj_feats"], image["obj_feats"], *image["labels"], bank)

    return module, images, loss, ("rel_feats", "subj_feats", "obj_feats")


def clipmatch_case():
    bank, _, _ = make_bank()
    gen = torch.Generator().manual_seed(4)
    images = [dict(relation=torch.randn(4, 5, generator=gen), labels=[torch.tensor(t) for t in labels])
              for labels in (([1, 1, 4, 2], [1, 0, 0, 0], [2, 2, 1, 3]), ([1, 1, 2, 4], [2, 1, 0, 0], [3, 2, 3, 1]))]
    torch.manual_seed(5)
    module = PredicateMatchingLoss(rel_dim=5, text_dim=DIM, temperature=0.1)

    def loss(module, image):
        return module(image["relation"], *image["labels"], bank)

    return module, images, loss, ("relation",)


CASES = {"probe_head": lambda: probe_case(True), "probe_no_head": lambda: probe_case(False),
         "rcl_dual": lambda: rcl_case("dual"), "rcl_triple": lambda: rcl_case("triple"),
         "clipmatch": clipmatch_case}


def both_images(images, inputs):
    """One batch of both images, as one process would get it."""
    joined = dict(images[0])
    for key, value in images[0].items():
        if key in inputs:
            joined[key] = torch.cat([image[key] for image in images])
        elif key == "labels":
            joined[key] = [torch.cat(parts) for parts in zip(*(image[key] for image in images))]
        else:  # per-image lists
            joined[key] = [item for image in images for item in image[key]]
    return joined


def loss_and_gradients(module, image, loss_fn, inputs):
    image = {k: v.clone().requires_grad_() if k in inputs else v for k, v in image.items()}
    module.zero_grad(set_to_none=True)
    loss = loss_fn(module, image)
    loss.backward()
    grads = {name: p.grad.clone() for name, p in module.named_parameters() if p.grad is not None}
    return loss.item(), grads, {k: image[k].grad for k in inputs}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process(rank, case, port, out):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        module, images, loss_fn, inputs = CASES[case]()
        loss, grads, input_grads = loss_and_gradients(module, images[rank], loss_fn, inputs)
        for grad in grads.values():  # what DDP does with the parameters' gradients
            dist.all_reduce(grad)
            grad /= WORLD
        torch.save((loss, grads, input_grads), out / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("case", sorted(CASES))
def test_two_processes_with_one_image_each_train_as_one_process_with_both(case, tmp_path):
    module, images, loss_fn, inputs = CASES[case]()
    assert not distributed.gathers(True)  # no process group here: the single-process reference
    ref_loss, ref_grads, ref_input_grads = loss_and_gradients(module, both_images(images, inputs), loss_fn, inputs)
    assert ref_grads and all(g.abs().sum() > 0 for g in ref_grads.values())

    mp.start_processes(process, args=(case, free_port(), tmp_path), nprocs=WORLD, start_method="spawn")
    per_rank = {rank: torch.load(tmp_path / f"rank{rank}.pt") for rank in range(WORLD)}
    offsets = [0]
    for image in images:
        offsets.append(offsets[-1] + image[inputs[0]].shape[0])
    for rank, (loss, grads, input_grads) in per_rank.items():
        assert loss == pytest.approx(ref_loss, abs=1e-6, rel=1e-6)
        assert grads.keys() == ref_grads.keys()
        for name, grad in grads.items():
            torch.testing.assert_close(grad, ref_grads[name], atol=1e-6, rtol=1e-5, msg=name)
        for key, grad in input_grads.items():
            if ref_input_grads[key] is None:  # an input the level does not read (RCL triple: the objects)
                assert grad is None
                continue
            torch.testing.assert_close(grad / WORLD, ref_input_grads[key][offsets[rank]:offsets[rank + 1]],
                                       atol=1e-6, rtol=1e-5, msg=key)


def process_without_gathering(rank, port, out):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        module, images, loss_fn, _ = probe_case(True)
        module.gather_negatives = False
        (out / f"rank{rank}.txt").write_text(str(loss_fn(module, images[rank]).item()))
    finally:
        dist.destroy_process_group()


def test_gather_negatives_false_keeps_each_process_to_its_own_batch(tmp_path):
    mp.start_processes(process_without_gathering, args=(free_port(), tmp_path), nprocs=WORLD, start_method="spawn")
    assert [float((tmp_path / f"rank{r}.txt").read_text()) for r in range(WORLD)] == [0.0, 0.0]  # no negatives


@pytest.mark.parametrize("case, name", [("probe_head", "PROBE"), ("rcl_dual", "RCL"), ("clipmatch", "CLIPMATCH")])
def test_a_contrast_without_negatives_says_so_once(case, name, caplog, monkeypatch):
    monkeypatch.setattr(distributed, "_told_without_negatives", set())
    module, images, loss_fn, _ = CASES[case]()
    image = dict(images[0])
    if case == "rcl_dual":  # one relation
        image = {k: [t[:1] for t in v] if k == "labels" else v[:1] for k, v in image.items()}
    if case == "clipmatch":  # one row
        image = {"relation": image["relation"][:1], "labels": [t[:1] for t in image["labels"]]}
    with caplog.at_level(logging.WARNING, logger="sgg_plugins.regularizers.distributed"):
        loss_fn(module, image)
        loss_fn(module, image)
    told = [r.getMessage() for r in caplog.records if "has no negatives" in r.getMessage()]
    assert len(told) == 1 and f"MODEL.{name}" in told[0] and "Said once" in told[0]


def test_a_contrast_with_negatives_says_nothing(caplog, monkeypatch):
    monkeypatch.setattr(distributed, "_told_without_negatives", set())
    module, images, loss_fn, inputs = probe_case(True)
    with caplog.at_level(logging.WARNING, logger="sgg_plugins.regularizers.distributed"):
        loss_fn(module, both_images(images, inputs))
    assert not [r for r in caplog.records if "has no negatives" in r.getMessage()]


def test_the_key_is_on_by_default_and_refuses_a_non_boolean():
    cfg = fake_sgb.make_cfg()
    add_sgg_plugins_config(cfg)
    assert cfg.MODEL.SGG_PLUGINS.GATHER_NEGATIVES is True
    cfg.MODEL.SGG_PLUGINS.GATHER_NEGATIVES = "yes"
    with pytest.raises(ConfigError, match="MODEL.SGG_PLUGINS.GATHER_NEGATIVES"):
        validate_config(cfg)
