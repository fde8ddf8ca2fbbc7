"""Write metagna_tf/data/splits/omniglot_minimal.json from the two minimal background zips.

The split is by character, ~70/10/20 train/val/test within each alphabet
(stratified), drawn once with a fixed seed and then committed: the file, not
this script, defines the split. Greek and Latin appear in both zips and are
counted once.

    python tools/make_omniglot_split.py --data-dir ../shared/data/omniglot
"""

from __future__ import annotations

import argparse
import json
import zipfile
from collections import defaultdict
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "metagna_tf/data/splits/omniglot_minimal.json"


def character_keys(data_dir: Path) -> list[str]:
    keys = set()
    for name in ("images_background_small1.zip", "images_background_small2.zip"):
        with zipfile.ZipFile(data_dir / name) as zf:
            for member in zf.namelist():
                parts = member.rstrip("/").split("/")
                if member.endswith(".png") and len(parts) >= 3:
                    keys.add(f"{parts[-3]}/{parts[-2]}")
    return sorted(keys)


def stratified_split(keys: list[str], seed: int = 0, fractions=(0.7, 0.1)) -> dict[str, list[str]]:
    rng = np.random.default_rng(seed)
    by_alphabet = defaultdict(list)
    for key in keys:
        by_alphabet[key.split("/")[0]].append(key)
    split = {"train": [], "val": [], "test": []}
    for alphabet in sorted(by_alphabet):
        chars = list(rng.permutation(by_alphabet[alphabet]))
        n_train = round(fractions[0] * len(chars))
        n_val = max(1, round(fractions[1] * len(chars)))
        split["train"] += chars[:n_train]
        split["val"] += chars[n_train:n_train + n_val]
        split["test"] += chars[n_train + n_val:]
    return {k: sorted(str(c) for c in v) for k, v in split.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    keys = character_keys(args.data_dir)
    split = stratified_split(keys, args.seed)
    OUT.write_text(json.dumps({"source": "images_background_small1.zip + "
                               "images_background_small2.zip", "seed": args.seed, **split},
                              indent=1) + "\n")
    print(f"{len(keys)} characters -> " + ", ".join(f"{k} {len(v)}" for k, v in split.items())
          + f"; wrote {OUT}")


if __name__ == "__main__":
    main()
