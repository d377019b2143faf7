"""Train the default model of ``aimc deploy`` and write ``data/mnist5k_mlp.pt``.

MLP 784-256-128-10 (``aimc.zoo.mlp()``), trained digitally on the mnist5k train split (4,000 images;
``aimc.datasets.load("mnist5k")``, default fixed split), Adam, fixed seed. The test accuracy on the 1,000-image
test split is printed and stored in the checkpoint's meta.

Usage (from the repository root)::

    python data/make_default_model.py [--out data/mnist5k_mlp.pt] [--overwrite]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a source checkout without installing
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from aimc import datasets, zoo  # noqa: E402

SEED = 0
EPOCHS = 30
LR = 1e-3
BATCH_SIZE = 32
WEIGHT_DECAY = 1e-4


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "data" / "mnist5k_mlp.pt")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing checkpoint")
    args = ap.parse_args(argv)
    if args.out.exists() and not args.overwrite:
        print(f"{args.out} exists; pass --overwrite to replace it", file=sys.stderr)
        return 1

    ds = datasets.load("mnist5k")
    torch.manual_seed(SEED)  # weight initialisation
    model = zoo.mlp(784, (256, 128), 10)
    acc = zoo.train_digital(model, ds, epochs=EPOCHS, lr=LR, batch_size=BATCH_SIZE, seed=SEED,
                            optimizer="adam", weight_decay=WEIGHT_DECAY, verbose=True)
    n_correct = int(round(acc * len(ds.y_test)))
    meta = {
        "dataset": "mnist5k",
        "split": {"seed": 0, "test_fraction": datasets.DEFAULT_TEST_FRACTION,
                  "n_train": int(len(ds.y_train)), "n_test": int(len(ds.y_test))},
        "accuracy": acc,
        "n_correct": n_correct,
        "seed": SEED,
        "training": {"optimizer": "adam", "epochs": EPOCHS, "lr": LR, "batch_size": BATCH_SIZE,
                     "weight_decay": WEIGHT_DECAY},
        "command": "python data/make_default_model.py",
        "numpy": np.__version__,
    }
    zoo.save_checkpoint(model, args.out, meta, overwrite=args.overwrite)
    print(f"test accuracy {acc:.4f} ({n_correct}/{len(ds.y_test)}) -> {args.out} "
          f"({args.out.stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
