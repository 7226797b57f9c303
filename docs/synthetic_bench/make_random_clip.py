"""Save a small OpenCLIP model with random weights as a `local-dir:` model folder.

This machine cannot download CLIP weights; the shipped example still goes through the real text
path (`sgg-plugins embed` with an OpenCLIP model folder) with random weights. Its RCL row therefore
measures the plumbing and cost of RCL, not the benefit of CLIP's semantics.

    python make_random_clip.py OUT_FOLDER   # then: --clip-model local-dir:OUT_FOLDER
"""

import json
import sys
from pathlib import Path

import open_clip
import torch

# ViT-B-32's joint embedding width (512) with a one-layer, 64-wide text tower.
CONFIG = {"embed_dim": 512,
          "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16, "head_width": 32},
          "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1}}

if __name__ == "__main__":
    folder = Path(sys.argv[1])
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": CONFIG, "preprocess_cfg": {}}))
    torch.manual_seed(0)
    model = open_clip.create_model(f"local-dir:{folder}", load_weights=False)  # the folder's config, random weights
    torch.save(model.state_dict(), folder / "open_clip_pytorch_model.bin")
    print(f"wrote local-dir:{folder}")
