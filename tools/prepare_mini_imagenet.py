"""Convert any mini-ImageNet copy to the 84x84 pickle caches (fast to load).

    python tools/prepare_mini_imagenet.py --data-dir RAW --out PREPARED
    python -m metagna_tf.train --dataset mini_imagenet --data-dir PREPARED ...

RAW may be in any accepted format (e.g. Ravi & Larochelle's CSVs + raw JPEGs);
PREPARED receives ``mini-imagenet-cache-{train,val,test}.pkl``.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from metagna_tf.data.mini_imagenet import prepare

    for path in prepare(args.data_dir, args.out):
        print(path)


if __name__ == "__main__":
    main()
