"""Train through the SGB launcher, recording each optimizer step's LRs, optionally killed or with a full disk.

    python tests/sgb_resume_worker.py '{"lr_log": PATH, "kill": null | "validation" | "iteration",
                                        "at": N, "disk_full_at": null | N}' LAUNCHER ARGS...

Run by ``test_sgb_resume_state.py``. ``lr_log`` gets one JSON line per optimizer step: every param
group's LR in that step. ``kill`` ends the process (rank 0 under torchrun)
with SIGKILL, as an out-of-memory killer does: ``validation`` in the first validation after the
checkpoint of iteration ``at`` (the host validates after it checkpoints), ``iteration`` in iteration
``at``'s forward, before its update. ``disk_full_at`` makes ``torch.save`` of that iteration's
checkpoint write a part of the file and fail as on a full disk.
"""

import functools
import json
import os
import signal
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

DISK_FULL = ("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file data/0: "
             "file write failed")


def main(options, argv):
    import torch

    from sgg_plugins.hosts.sgb import install
    from sgg_plugins.hosts.sgb.launch import run_host_script

    install()
    from maskrcnn_benchmark.engine import inference as inference_module
    from maskrcnn_benchmark.utils import checkpoint

    run = {"steps": 0, "checkpointed": False}
    killed_at = options.get("at")

    def die():
        # Under torchrun rank 0 alone, as an out-of-memory killer takes one process: the others wait
        # in a collective until torchrun stops them, after rank 0 has written the checkpoint.
        if os.environ.get("RANK", "0") == "0":
            os.kill(os.getpid(), signal.SIGKILL)

    sgd_step = torch.optim.SGD.step

    @functools.wraps(sgd_step)
    def recording_step(self, *args, **kwargs):
        run["steps"] += 1
        if options.get("kill") == "iteration" and run["steps"] == killed_at:
            die()
        with open(options["lr_log"], "a") as f:
            f.write(json.dumps({"lrs": [group["lr"] for group in self.param_groups]}) + "\n")
        return sgd_step(self, *args, **kwargs)

    torch.optim.SGD.step = recording_step

    save = checkpoint.Checkpointer.save

    @functools.wraps(save)
    def noting_save(self, name, **kwargs):
        result = save(self, name, **kwargs)
        run["checkpointed"] = run["checkpointed"] or kwargs.get("iteration") == killed_at
        return result

    checkpoint.Checkpointer.save = noting_save

    inference = inference_module.inference

    @functools.wraps(inference)
    def killed_inference(*args, **kwargs):
        if options.get("kill") == "validation" and run["checkpointed"]:
            die()
        return inference(*args, **kwargs)

    inference_module.inference = killed_inference

    torch_save = torch.save

    def filling_save(obj, f, *args, **kwargs):
        if options.get("disk_full_at") is not None and str(f).endswith(f"model_{options['disk_full_at']:07d}.pth"):
            with open(f, "wb") as partial:
                partial.write(b"PK\x03\x04" + b"\0" * 4096)
            raise RuntimeError(DISK_FULL)
        return torch_save(obj, f, *args, **kwargs)

    torch.save = filling_save
    run_host_script("relation_train_net", argv)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]), sys.argv[2:])
