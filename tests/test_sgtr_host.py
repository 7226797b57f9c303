"""SGTR through its own, unmodified scripts on synthetic data, on CPU (needs SGTR_ROOT).

One training run (4 iterations: checkpoints at 2 and 4, an evaluation at 4) is shared by the
tests; the resume and test-script runs start from its output folder. MODEL.ALIGN's supervised form
(Table 3 "SA") is also checked on the real model in one worker process (``sgtr_align_worker.py``):
its loss terms, the exact set of parameters they train, and the host's own loss reproduced when
the mirror is the clean pass.
"""

import hashlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SGTR_ROOT = os.environ.get("SGTR_ROOT")
pytestmark = pytest.mark.skipif(not SGTR_ROOT, reason="needs an SGTR checkout: set SGTR_ROOT")
OVERLAY = REPO / "configs" / "sgtr" / "synthetic_cpu.opts"


def overlay_opts():
    return [token for line in OVERLAY.read_text().splitlines() if line.strip() for token in line.split(None, 1)]


def checkout_digest(root):
    """A digest of every file of the checkout (path and bytes): any write to it changes it."""
    digest = hashlib.sha256()
    for path in sorted(Path(root).rglob("*")):
        if path.is_file() or path.is_symlink():
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes() if path.is_file() else os.readlink(path).encode())
    return digest.hexdigest()


def run_sgtr(script, run_dir, data_dir, *args, timeout=900):
    """Run a launcher from ``run_dir``: its options, the CPU overlay, then ``args``' KEY VALUE opts."""
    options = [a for a in args if a.startswith("--")]
    opts = [a for a in args if not a.startswith("--")]
    cmd = [sys.executable, str(REPO / "tools" / f"sgtr_{script}.py"), "--vg-dir", str(data_dir), *options,
           *overlay_opts(), *opts]
    # One thread unless the caller chose: on a machine shared with other jobs torch's default thread
    # pool spins and a step of the CPU overlay took 10-80 s instead of about 1 s.
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    result = subprocess.run(cmd, cwd=run_dir, capture_output=True, text=True, timeout=timeout, env=env)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    return log


@pytest.fixture(scope="module")
def trained(tmp_path_factory, synthetic_vg):
    run_dir = tmp_path_factory.mktemp("sgtr_run")
    before = checkout_digest(SGTR_ROOT)
    out = run_dir / "out"
    log = run_sgtr("train_net", run_dir, synthetic_vg, "MODEL.WEIGHTS", "''", "OUTPUT_DIR", str(out))
    return {"run_dir": run_dir, "out": out, "log": log, "digest": before, "data": synthetic_vg}


def metrics(out):
    return [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]


def test_trains_checkpoints_and_evaluates_on_cpu(trained):
    out, log = trained["out"], trained["log"]
    assert "skip_git_commit=True" in log and "disable_gpu_check=True" in log
    assert "sgg-plugins compat: cvpods._C is not built" in log
    assert {"model_0000001.pth", "model_0000003.pth", "model_final.pth", "last_checkpoint"} <= {
        p.name for p in out.iterdir()}
    losses = [m["total_loss"] for m in metrics(out) if "total_loss" in m]
    assert len(losses) == 4 and all(math.isfinite(v) for v in losses)
    assert "SGG eval:   R @ 20" in log and "mR @ 100" in log  # the evaluation at iteration 4
    assert (out / "evaluation_res.txt").is_file()
    assert os.path.islink(trained["run_dir"] / "log")  # the host's link lands in the run folder


def test_resumes_from_the_last_checkpoint(trained):
    log = run_sgtr("train_net", trained["run_dir"], trained["data"], "--resume", "MODEL.WEIGHTS", "''",
                   "OUTPUT_DIR", str(trained["out"]), "SOLVER.LR_SCHEDULER.MAX_ITER", "5", "TEST.EVAL_PERIOD", "0")
    assert "Starting training from iteration 4" in log
    assert [m["iteration"] for m in metrics(trained["out"]) if "total_loss" in m][-1] == 4


def test_test_script_prints_recall_and_mean_recall(trained):
    log = run_sgtr("test_net", trained["run_dir"], trained["data"],
                   "MODEL.TEST_WEIGHTS", str(trained["out"] / "model_final.pth"))
    for line in ("SGG eval:   R @ 20", "SGG eval:  mR @ 20", "SGG eval: ng-mR @ 20", "copypaste: sgdet_recall/top20"):
        assert line in log


@pytest.fixture(scope="module")
def aligned(trained):
    """MODEL.ALIGN fine-tuning from the vanilla run's weights (2 iterations, a checkpoint at 2)."""
    out = trained["run_dir"] / "out_align"
    log = run_sgtr("train_net", trained["run_dir"], trained["data"], "MODEL.ALIGN.ENABLED", "True",
                   "MODEL.WEIGHTS", str(trained["out"] / "model_final.pth"), "OUTPUT_DIR", str(out),
                   "SOLVER.LR_SCHEDULER.MAX_ITER", "2", "SOLVER.CHECKPOINT_PERIOD", "2", "TEST.EVAL_PERIOD", "0")
    return {"out": out, "log": log}


def test_align_trains_from_a_vanilla_checkpoint_with_finite_alignment_losses(aligned):
    assert "MODEL.ALIGN on SGTR: masks (p=0.1) on 18 cross-attention blocks" in aligned["log"]
    steps = [m for m in metrics(aligned["out"]) if "total_loss" in m]
    assert len(steps) == 2
    for m in steps:
        values = [m[f"loss_align_{k}"] for k in ("predicate", "subject", "object")]
        assert all(math.isfinite(v) and v >= 0 for v in values)
        assert math.isfinite(m["total_loss"])


@pytest.fixture(scope="module")
def aligned_supervised(trained):
    """MODEL.ALIGN.LOSS supervised fine-tuning from the vanilla run's weights (2 iterations)."""
    out = trained["run_dir"] / "out_align_supervised"
    log = run_sgtr("train_net", trained["run_dir"], trained["data"], "MODEL.ALIGN.ENABLED", "True",
                   "MODEL.ALIGN.LOSS", "supervised", "MODEL.WEIGHTS", str(trained["out"] / "model_final.pth"),
                   "OUTPUT_DIR", str(out), "SOLVER.LR_SCHEDULER.MAX_ITER", "2", "SOLVER.CHECKPOINT_PERIOD", "100",
                   "TEST.EVAL_PERIOD", "0")
    return {"out": out, "log": log}


# The host's relation-criterion terms on VG (rule-based entity indexing: no indexing loss).
RELATION_TERMS = {"loss_rel_focal", "loss_rel_vector", "loss_aux_sub_entities_boxes", "loss_aux_obj_entities_boxes",
                  "loss_aux_sub_entities_boxes_giou", "loss_aux_obj_entities_boxes_giou",
                  "loss_aux_sub_entities_labels_ce", "loss_aux_obj_entities_labels_ce"}
SUPERVISED_KEYS = {f"loss_align_sup_{k[len('loss_'):]}" for k in RELATION_TERMS}


def test_supervised_align_trains_with_finite_losses_for_each_relation_criterion_term(aligned_supervised):
    assert "Table 3 'SA'" in aligned_supervised["log"]
    steps = [m for m in metrics(aligned_supervised["out"]) if "total_loss" in m]
    assert len(steps) == 2
    for m in steps:
        assert {k for k in m if k.startswith("loss_align")} == SUPERVISED_KEYS
        assert all(math.isfinite(m[k]) and m[k] >= 0 for k in SUPERVISED_KEYS)
        assert math.isfinite(m["total_loss"])


# What LOSS supervised trains on the real model (docs/sgtr.md): the structural decoder's three
# stacks of layers (not the unused norms of their TransformerDecoder wrappers), its norms and
# entity-fusion layers, the class heads the mirror uses, and the host's box and relation-vector heads.
STRUCTURAL_DECODER = ["relation_decoder.predicate_decoder.layers", "relation_decoder.entities_aware_decoder.layers",
                      "relation_decoder.rel_ent_crs_decoder_layers_sub", "relation_decoder.rel_decoder_norm",
                      "relation_decoder.rel_ent_crs_decoder_norm", "relation_decoder.ent_rel_fuse_fc_sub",
                      "relation_decoder.ent_rel_fuse_fc_obj"]
SHARED_BOX_HEADS = ["rel_vector_embed", "sub_bbox_embed", "obj_bbox_embed"]
SUPERVISED_VARIANTS = {
    "untied": (["MODEL.ALIGN.HEAD", "untied_linear", "MODEL.ALIGN.MASK_PROB", "0.1",
                "MODEL.ALIGN.SUPERVISED_WEIGHT", "1.0", "MODEL.REL_DETR.TRANSFORMER.DROPOUT_RATE", "0.1"],
               STRUCTURAL_DECODER + SHARED_BOX_HEADS + ["sgg_plugins"]),
    # no masks, the original heads and no dropout: the mirror is the clean pass
    "clean_mirror": (["MODEL.ALIGN.HEAD", "tied", "MODEL.ALIGN.MASK_PROB", "0.0",
                      "MODEL.ALIGN.SUPERVISED_WEIGHT", "2.0", "MODEL.REL_DETR.TRANSFORMER.DROPOUT_RATE", "0.0"],
                     STRUCTURAL_DECODER + SHARED_BOX_HEADS + ["rel_class_embed", "sub_class_embed", "obj_class_embed"]),
}


@pytest.fixture(scope="module")
def supervised_on_the_real_model(trained):
    out = trained["run_dir"] / "out_worker"
    out.mkdir()  # the host's dataset writes its statistics there; its trainer would have made it
    opts = [*overlay_opts(), "MODEL.WEIGHTS", "''", "OUTPUT_DIR", str(out),
            "MODEL.ALIGN.ENABLED", "True", "MODEL.ALIGN.LOSS", "supervised"]
    job = {"vg_dir": str(trained["data"]), "run_dir": str(trained["run_dir"]),
           "variants": {name: opts + variant for name, (variant, _) in SUPERVISED_VARIANTS.items()},
           "declared": {name: declared for name, (_, declared) in SUPERVISED_VARIANTS.items()}}
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    result = subprocess.run([sys.executable, str(REPO / "tests" / "sgtr_align_worker.py"), json.dumps(job)],
                            cwd=trained["run_dir"], capture_output=True, text=True, timeout=900, env=env)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_supervised_align_on_the_real_model_calls_the_criterion_on_the_mirror_and_trains_the_declared_set(
        supervised_on_the_real_model):
    run = supervised_on_the_real_model["untied"]
    host_call, mirror_call = run["criterion_calls"]
    assert mirror_call["keys"] == host_call["keys"]  # every prediction the criterion reads, the mirror's
    assert set(host_call["terms"]) == set(mirror_call["terms"]) == RELATION_TERMS
    assert SUPERVISED_KEYS <= set(run["requires_grad"])
    assert all(math.isfinite(run["losses"][k]) for k in SUPERVISED_KEYS)
    touched, declared = set(run["touched"]), set(run["declared"])
    assert touched == declared, f"unexpected: {sorted(touched - declared)}\nmissing: {sorted(declared - touched)}"


def test_supervised_align_with_the_clean_pass_as_mirror_is_the_hosts_own_relation_loss(supervised_on_the_real_model):
    run = supervised_on_the_real_model["clean_mirror"]
    losses = run["losses"]
    for term in RELATION_TERMS:
        assert math.isclose(losses[f"loss_align_sup_{term[len('loss_'):]}"], 2.0 * losses[term],
                            rel_tol=1e-4, abs_tol=1e-6), term
    assert set(run["touched"]) == set(run["declared"])


def _copypaste(log):
    return [line.split("copypaste: ", 1)[1] for line in log.splitlines() if "copypaste: " in line]


def test_align_checkpoint_evaluates_in_the_vanilla_host_identically(aligned, trained):
    weights = str(aligned["out"] / "model_final.pth")
    vanilla = run_sgtr("test_net", trained["run_dir"], trained["data"], "--without-plugin",
                       "MODEL.TEST_WEIGHTS", weights)
    plugged = run_sgtr("test_net", trained["run_dir"], trained["data"], "MODEL.TEST_WEIGHTS", weights)
    assert "sgdet_mean_recall/top100" in "\n".join(_copypaste(vanilla))
    assert _copypaste(vanilla) == _copypaste(plugged)


def test_host_checkout_is_untouched(trained):
    # Runs after the others in this module (file order): every run so far went through the launcher.
    assert checkout_digest(SGTR_ROOT) == trained["digest"]
