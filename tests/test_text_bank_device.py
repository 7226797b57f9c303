"""Text banks are embedded where the host trains (#21): on a GPU machine the text encoder runs on the
GPU (CLIPMATCH's VG candidate bank, about 50,000 texts, takes hours on the CPU)."""
import pytest
import torch

import fake_sgb as fake
from sgg_plugins.hosts.sgb.objectives import clipmatch, rcl
from sgg_plugins.hosts.sgb.predictors import regularized_predictor_class

OBJ = [f"o{i}" for i in range(fake.NUM_OBJ_CLASSES)]
PRED = [f"r{i}" for i in range(fake.NUM_REL_CLASSES)]
TRIPLETS = torch.tensor([[1, 1, 2], [2, 2, 1]])
# node -> (its objective module, where it reads the training split, its bank builder)
OBJECTIVES = {"RCL": (rcl, "training_text_sources", "load_or_compute_bank"),
              "CLIPMATCH": (clipmatch, "candidate_sources", "load_or_compute_candidate_bank")}


class BankRequested(Exception):
    pass


@pytest.mark.parametrize("node", sorted(OBJECTIVES))
@pytest.mark.parametrize("device", ["cpu", "cuda", "cuda:1"])
def test_the_bank_is_embedded_on_the_hosts_model_device(node, device, monkeypatch):
    module, sources, builder = OBJECTIVES[node]
    monkeypatch.setattr(module, sources, lambda config: (OBJ, PRED, TRIPLETS))

    def requested(*args, **kwargs):
        raise BankRequested(kwargs["device"])

    monkeypatch.setattr(module, builder, requested)
    cfg = fake.make_cfg("MotifPredictor", **{f"{node}_ENABLED": True})
    cfg.MODEL.DEVICE = device
    with pytest.raises(BankRequested) as bank:
        regularized_predictor_class(fake.MotifPredictor)(cfg, fake.IN_CHANNELS)
    assert bank.value.args[0] == torch.device(device)
