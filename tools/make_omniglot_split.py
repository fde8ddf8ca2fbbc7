"""Write the committed Omniglot splits of the two minimal background zips.

``standard`` (``omniglot_minimal.json``): by character, ~70/10/20 train/val/test
within each alphabet (stratified). ``cross_alphabet``
(``omniglot_cross_alphabet.json``): train on every character of the alphabets of
``images_background_small1.zip``; validation and test on the alphabets found only in
``images_background_small2.zip``, ~30/70 by character within each alphabet.
Each is drawn once with a fixed seed and then committed: the file, not this
script, defines the split. Greek and Latin appear in both zips and are counted once.

    python tools/make_omniglot_split.py --data-dir ../shared/data/omniglot [--protocol cross_alphabet]
"""

from __future__ import annotations

import argparse
import json
import zipfile
from collections import defaultdict
from pathlib import Path

import numpy as np

SPLITS = Path(__file__).resolve().parents[1] / "metagna_tf/data/splits"
OUT = SPLITS / "omniglot_minimal.json"
OUT_CROSS = SPLITS / "omniglot_cross_alphabet.json"
ZIPS = ("images_background_small1.zip", "images_background_small2.zip")


def character_keys(data_dir: Path, zips=ZIPS) -> list[str]:
    keys = set()
    for name in zips:
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


def cross_alphabet_split(data_dir: Path, seed: int = 0, val_fraction: float = 0.3
                         ) -> dict[str, list[str]]:
    """Train: the alphabets of small1; val/test: the alphabets only in small2, by character."""
    train = character_keys(data_dir, ZIPS[:1])
    train_alphabets = {k.split("/")[0] for k in train}
    held_out = [k for k in character_keys(data_dir, ZIPS[1:])
                if k.split("/")[0] not in train_alphabets]
    rest = stratified_split(held_out, seed, fractions=(0.0, val_fraction))
    return {"train": sorted(train), "val": rest["val"], "test": rest["test"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--protocol", choices=("standard", "cross_alphabet"), default="standard")
    args = parser.parse_args()
    if args.protocol == "standard":
        split, out = stratified_split(character_keys(args.data_dir), args.seed), OUT
    else:
        split, out = cross_alphabet_split(args.data_dir, args.seed), OUT_CROSS
    out.write_text(json.dumps({"source": " + ".join(ZIPS), "protocol": args.protocol,
                               "seed": args.seed, **split}, indent=1) + "\n")
    print(f"{args.protocol}: " + ", ".join(f"{k} {len(v)}" for k, v in split.items())
          + f" characters; wrote {out}")


if __name__ == "__main__":
    main()
