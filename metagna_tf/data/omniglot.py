"""Omniglot from the official zips or their extracted folders (or TFDS).

Reads ``images_background*.zip`` / ``images_evaluation.zip`` (or folders of
the same names) laid out as ``<set>/<Alphabet>/<characterNN>/<drawer>.png``.
A class is a character ``Alphabet/characterNN``; a character present in two
sets (Greek and Latin are in both minimal sets) is counted once.

Class splits (deterministic, documented in docs/method.md):

* ``images_evaluation`` present: test = evaluation characters; val = every
  10th background character of each alphabet (sorted, positions 9, 19, ...);
  train = the other background characters.
* minimal sets only: the committed file ``splits/omniglot_minimal.json``
  (made by ``tools/make_omniglot_split.py``: ~70/10/20 by character,
  stratified by alphabet).

``protocol="cross_alphabet"``: no alphabet is shared between training and
validation/test. With the evaluation set present this is the standard split
above; with the minimal sets only, ``splits/omniglot_cross_alphabet.json``:
training on the alphabets of ``images_background_small1`` (Balinese,
Early_Aramaic, Greek, Korean, Latin), validation and test on the alphabets
found only in ``images_background_small2`` (Japanese_(katakana), Sanskrit,
Tagalog), split between them by character, stratified by alphabet.

Images become ``image_size`` squares with strokes as 1 on 0; training
classes get 90/180/270-degree rotations as new classes when ``rotations``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import zipfile
from collections import defaultdict
from importlib import resources
from pathlib import Path

import numpy as np

from metagna_tf.data.decoded_cache import cached
from metagna_tf.data.episodes import ClassPool
from metagna_tf.data.images import ImageOptions, decode_image, is_image_file

log = logging.getLogger(__name__)

INVERT = True  # black strokes on white -> strokes as 1 on 0
SETS = ("images_background", "images_background_small1", "images_background_small2",
        "images_evaluation")
# The two official minimal background zips ship with the package (MIT; see
# omniglot_minimal/README.md): the offline default when no data folder is given.
BUNDLED = {
    "images_background_small1.zip":
        "f38eb80f801274ac2b4dff5b24289016bfaba4a7d5bb50deebf27104ad6cb8a4",
    "images_background_small2.zip":
        "3ccaa407515a8778e5d0861875af38b17e418f301ad5bb3b5a6b65d901a41c7f",
}
HELP = ("get the official zips (images_background.zip and images_evaluation.zip, or the "
        "minimal images_background_small1/2.zip) from github.com/brendenlake/omniglot "
        "(python/ folder) into a folder and pass --data-dir or set METAGNA_DATA_DIR")


def _members(data_dir: Path):
    """Yield (set name, character key, file source, read function) for every image."""
    skipped: list[str] = []
    yield from _set_members(data_dir, skipped)
    if skipped:
        log.warning("omniglot: skipped %d file(s) that are not images or not at "
                    "<set>/<Alphabet>/<character>/<image>, e.g. %s", len(skipped), skipped[0])


def _set_members(data_dir: Path, skipped: list[str]):
    for name in SETS:
        archive = data_dir / f"{name}.zip"
        folder = data_dir / name
        if archive.is_file():
            try:
                zf = zipfile.ZipFile(archive)
            except zipfile.BadZipFile as err:
                raise ValueError(f"{archive}: not a valid zip file ({err})") from err
            for info in zf.infolist():
                parts = info.filename.rstrip("/").split("/")
                if info.is_dir() or parts[-1].startswith("."):
                    continue
                if len(parts) < 4 or not is_image_file(parts[-1]):
                    skipped.append(f"{archive}:{info.filename}")
                    continue
                key = f"{parts[-3]}/{parts[-2]}"
                yield name, key, f"{archive}:{info.filename}", (lambda zf=zf, i=info: zf.read(i))
        elif folder.is_dir():
            for path in sorted(folder.glob("*/*/*")):
                if not path.is_file() or path.name.startswith("."):
                    continue
                if not is_image_file(path):
                    skipped.append(str(path))
                    continue
                key = f"{path.parent.parent.name}/{path.parent.name}"
                yield name, key, str(path), path.read_bytes


def find_sets(data_dir: Path) -> list[str]:
    return [n for n in SETS if (data_dir / f"{n}.zip").is_file() or (data_dir / n).is_dir()]


def read_characters(data_dir: Path, image_size: int):
    """{set name: {character key: uint8 (n, s, s, 1)}} with duplicates across sets dropped
    (read-only arrays, decoded once: ``decoded_cache``)."""
    found = find_sets(data_dir)
    if not found:
        raise FileNotFoundError(f"omniglot: no {', '.join(s + '.zip' for s in SETS)} nor "
                                f"such folders in {data_dir}; {HELP}")
    sources = [data_dir / f"{n}.zip" if (data_dir / f"{n}.zip").is_file() else data_dir / n
               for n in found]

    def decode():
        images: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
        owner: dict[str, str] = {}
        options = ImageOptions(image_size, 1, INVERT)
        for set_name, key, source, read in _members(data_dir):
            if owner.setdefault(key, set_name) != set_name:
                continue  # same character (same drawings) already read from another set
            images[set_name][key].append(decode_image(read(), source, options))
        return {s: {k: np.stack(v) for k, v in sorted(chars.items())}
                for s, chars in images.items()}

    return cached("omniglot", sources, {"image_size": image_size, "invert": INVERT}, decode)


SPLIT_FILES = {"standard": "splits/omniglot_minimal.json",
               "cross_alphabet": "splits/omniglot_cross_alphabet.json"}


def split_file(protocol: str = "standard") -> dict[str, list[str]]:
    if protocol not in SPLIT_FILES:
        raise ValueError(f"omniglot: unknown protocol {protocol!r}; expected one of "
                         f"{sorted(SPLIT_FILES)}")
    return json.loads(resources.files("metagna_tf.data").joinpath(SPLIT_FILES[protocol])
                      .read_text())


def every_tenth_val(keys: list[str]) -> tuple[list[str], list[str]]:
    """Background characters -> (train, val): val is every 10th character of each alphabet."""
    by_alphabet = defaultdict(list)
    for key in sorted(keys):
        by_alphabet[key.split("/")[0]].append(key)
    train, val = [], []
    for chars in by_alphabet.values():
        for i, key in enumerate(chars):
            (val if i % 10 == 9 else train).append(key)
    return train, val


def split_characters(by_set: dict[str, dict[str, np.ndarray]], split: str,
                     protocol: str = "standard") -> dict[str, np.ndarray]:
    if split not in ("train", "val", "test", "all"):
        raise ValueError(f"omniglot: unknown split {split!r}; expected train, val, test or all")
    everything = {k: v for chars in by_set.values() for k, v in chars.items()}
    if split == "all":
        return everything
    if "images_evaluation" in by_set:
        if split == "test":
            return dict(by_set["images_evaluation"])
        background = {k: v for s, chars in by_set.items() if s != "images_evaluation"
                      for k, v in chars.items()}
        train, val = every_tenth_val(list(background))
        return {k: background[k] for k in (train if split == "train" else val)}
    keys = split_file(protocol)[split]
    missing = [k for k in keys if k not in everything]
    if missing:
        log.warning("omniglot: %d character(s) of the committed %s split are not in the data "
                    "(e.g. %s); using the %d present", len(missing), split, missing[0],
                    len(keys) - len(missing))
    return {k: everything[k] for k in keys if k in everything}


def _tfds_characters(image_size: int) -> dict[str, dict[str, np.ndarray]]:
    import tensorflow_datasets as tfds
    from PIL import Image

    from metagna_tf.data.download import tfds_load
    from metagna_tf.data.images import to_model_array

    out: dict[str, dict[str, list]] = {"images_background": defaultdict(list),
                                        "images_evaluation": defaultdict(list)}
    options = ImageOptions(image_size, 1, INVERT)
    for tfds_split, set_name in (("train", "images_background"), ("test", "images_evaluation")):
        try:
            ds = tfds_load("omniglot", split=tfds_split)
        except Exception as err:  # noqa: BLE001 - offline, no manual data, broken cache...
            raise FileNotFoundError(f"omniglot: no --data-dir or METAGNA_DATA_DIR given and "
                                    f"TFDS could not provide 'omniglot' ({err}); {HELP}") from err
        for ex in tfds.as_numpy(ds):
            key = f"{int(ex['alphabet'])}/{int(ex['label'])}"
            img = Image.fromarray(ex["image"])
            out[set_name][key].append(to_model_array(img, options))
    return {s: {k: np.stack(v) for k, v in sorted(c.items())} for s, c in out.items()}


def load(data_dir: Path | None, split: str, *, image_size: int = 28, channels: int = 1,
         rotations: bool = False, protocol: str = "standard") -> ClassPool:
    if channels != 1:
        raise ValueError(f"omniglot: images are greyscale, so channels must be 1 (got {channels})")
    by_set = read_characters(data_dir, image_size) if data_dir else _tfds_characters(image_size)
    chars = split_characters(by_set, split, protocol)
    if not chars:
        raise ValueError(f"omniglot: split {split!r} has no characters in {data_dir}")
    images, indices, names = [], [], []
    turns = (0, 1, 2, 3) if rotations else (0,)
    start = 0
    for key, arr in chars.items():
        for k in turns:
            images.append(np.rot90(arr, k, axes=(1, 2)) if k else arr)
            indices.append(np.arange(start, start + len(arr)))
            names.append(key if k == 0 else f"{key}@rot{90 * k}")
            start += len(arr)
    log.info("omniglot %s: %d characters, %d classes, %d images", split, len(chars), len(names),
             start)
    return ClassPool(np.concatenate(images), indices, names)


def character_files(data_dir: Path, count: int = 5, split: str = "test", per_character: int = 20
                    ) -> dict[str, list[tuple[str, bytes]]]:
    """The raw image files of ``count`` characters of ``split``, each from another alphabet.

    ``{character key: [(file name, encoded bytes)]}`` (the first character of each alphabet,
    sorted; at most ``per_character`` files each), without decoding anything: examples for
    the app and real files for tests.
    """
    members: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    owner: dict[str, str] = {}
    for set_name, key, source, read in _members(data_dir):
        if owner.setdefault(key, set_name) == set_name:
            members[set_name][key].append((source, read))
    if not members:
        raise FileNotFoundError(f"omniglot: no image sets in {data_dir}; {HELP}")
    keys = split_characters({s: dict(chars) for s, chars in members.items()}, split)
    firsts: dict[str, str] = {}
    for key in sorted(keys):
        firsts.setdefault(key.split("/")[0], key)
    everything = {k: v for chars in members.values() for k, v in chars.items()}
    return {key: [(Path(source.split(":")[-1]).name, read()) for source, read in
                  sorted(everything[key])[:per_character]]
            for key in list(firsts.values())[:count]}


def bundled_dir(root: Path | None = None) -> Path:
    """The package's bundled minimal sets, their sha256 checked (``root`` overrides, for tests)."""
    root = Path(root) if root is not None else Path(
        str(resources.files("metagna_tf.data").joinpath("omniglot_minimal")))
    for name, expected in BUNDLED.items():
        path = root / name
        if not path.is_file():
            raise FileNotFoundError(f"omniglot: the bundled {path} is missing; reinstall "
                                    f"metagna-tf, or {HELP}")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != expected:
            raise ValueError(f"omniglot: the bundled {path} is corrupted (sha256 {digest}, "
                             f"expected {expected}); reinstall metagna-tf, or {HELP}")
    return root
