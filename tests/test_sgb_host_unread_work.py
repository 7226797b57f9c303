"""The skipped detector work (``sgg_plugins.hosts.sgb.unread_work``) changes no loss and no prediction.

The host's own model, data loader, optimizer and gradient clip, trained a few seeded steps with the
host's forwards and with the shortcuts: every loss must be the same float, and so must every test
prediction afterwards. The check has teeth: without the replay of the RPN's anchor sampling, the
relation head's dropout and background sampling draw different numbers and the losses differ.
"""

import random

import numpy as np
import pytest
import torch

from conftest import in_process_cfg, needs_sgb

pytestmark = needs_sgb

SMALL = ["INPUT.MIN_SIZE_TRAIN", "(128,)", "INPUT.MAX_SIZE_TRAIN", "160", "INPUT.MIN_SIZE_TEST", "128",
         "INPUT.MAX_SIZE_TEST", "160", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "10", "TEST.IMS_PER_BATCH", "1"]
STEPS = 3
TEST_IMAGES = 3


def train_and_test(cfg, skip, break_replay=False):
    """(every step's losses as exact floats, every test prediction's fields) of a seeded run."""
    from maskrcnn_benchmark.data import make_data_loader
    from maskrcnn_benchmark.modeling.detector import build_detection_model
    from maskrcnn_benchmark.solver import make_optimizer
    from maskrcnn_benchmark.utils.checkpoint import clip_grad_norm

    from sgg_plugins.hosts.sgb.unread_work import install_unread_work_skips, uninstall_unread_work_skips

    if skip:
        install_unread_work_skips()
    else:
        uninstall_unread_work_skips()
    try:
        random.seed(0)
        np.random.seed(0)
        torch.manual_seed(0)
        model = build_detection_model(cfg)
        if break_replay:
            model.rpn.loss_evaluator.fg_bg_sampler = lambda labels: None
        frozen = [p for m in (model.rpn, model.backbone, model.roi_heads.box) for p in m.parameters()]
        for p in frozen:
            p.requires_grad = False
        optimizer = make_optimizer(cfg, model, None, rl_factor=float(cfg.SOLVER.IMS_PER_BATCH))
        losses = []
        model.train()
        for _, (images, targets, _) in zip(range(STEPS), make_data_loader(cfg, mode="train", is_distributed=False)):
            loss_dict = model(images, targets)
            optimizer.zero_grad()
            sum(loss_dict.values()).backward()
            clip_grad_norm([(n, p) for n, p in model.named_parameters() if p.requires_grad], max_norm=5.0,
                           logger=None, clip=True)
            optimizer.step()
            losses.append({k: v.item() for k, v in loss_dict.items()})
        model.eval()
        predictions = []
        with torch.no_grad():
            test_loader = make_data_loader(cfg, mode="test", is_distributed=False)[0]
            for _, (images, targets, _) in zip(range(TEST_IMAGES), test_loader):
                (output,) = model(images, targets)
                predictions.append({f: output.get_field(f) for f in output.fields()} | {"bbox": output.bbox})
        return losses, predictions
    finally:
        install_unread_work_skips()


def assert_same_predictions(a, b):
    assert len(a) == len(b) == TEST_IMAGES
    for fields_a, fields_b in zip(a, b):
        assert fields_a.keys() == fields_b.keys()
        for name in fields_a:
            assert torch.equal(fields_a[name], fields_b[name]), name


@pytest.mark.parametrize("mode", ["predcls", "sgcls"])
def test_losses_and_predictions_bit_identical(host, mode):
    cfg = in_process_cfg(host, "MotifPredictor", mode, *SMALL)
    host_losses, host_predictions = train_and_test(cfg, skip=False)
    losses, predictions = train_and_test(cfg, skip=True)
    assert len(host_losses) == STEPS
    assert losses == host_losses  # exact float equality, step by step
    assert_same_predictions(predictions, host_predictions)


def test_without_the_rpn_sampling_replay_losses_differ(host):
    cfg = in_process_cfg(host, "MotifPredictor", "predcls", *SMALL)
    host_losses, _ = train_and_test(cfg, skip=False)
    losses, _ = train_and_test(cfg, skip=True, break_replay=True)
    assert losses != host_losses


def test_sgdet_runs_the_host_forwards(host):
    from maskrcnn_benchmark.modeling.roi_heads.box_head.box_head import ROIBoxHead
    from maskrcnn_benchmark.modeling.rpn.rpn import RPNModule

    from sgg_plugins.hosts.sgb.unread_work import _gt_boxes_without_other_heads, install_unread_work_skips

    install_unread_work_skips()
    assert hasattr(RPNModule.forward, "sgg_plugins_original")
    assert hasattr(ROIBoxHead.forward, "sgg_plugins_original")
    cfg = in_process_cfg(host, "MotifPredictor", "predcls", "MODEL.ROI_RELATION_HEAD.USE_GT_BOX", "False")
    assert not _gt_boxes_without_other_heads(cfg)
    assert _gt_boxes_without_other_heads(in_process_cfg(host, "MotifPredictor", "predcls"))
