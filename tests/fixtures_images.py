"""Tiny datasets in every accepted on-disk format, written into a tmp folder by the tests.

Nothing binary is committed: each function writes random images (small JPEGs,
PNGs, pickles, a .tgz) and returns the folder to pass as ``--data-dir``.
Class counts are the smallest that allow 2-way episodes in every split.
"""

from __future__ import annotations

import io
import json
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

SPLIT_CLASSES = {"train": 4, "val": 3, "test": 3}
PER_CLASS = 4
SIZE = 24  # stored image side; the loaders resize to the config's image_size


def wnids(split: str, n: int) -> list[str]:
    offset = {"train": 0, "val": 100, "test": 200}[split]
    return [f"n{offset + i:08d}" for i in range(n)]


def random_image(rng: np.random.Generator, size=(SIZE, SIZE), mode: str = "RGB") -> Image.Image:
    """A random picture of ``size`` (w, h) in PIL ``mode`` (RGB, L, CMYK, RGBA, I;16, P)."""
    w, h = size
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65535, (h, w), dtype=np.uint16))  # mode I;16
    rgb = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    if mode == "P":
        return rgb.convert("P", palette=Image.Palette.ADAPTIVE)
    return rgb.convert(mode)


def write_image(path: Path, rng: np.random.Generator, size=(SIZE, SIZE), mode: str = "RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    random_image(rng, size, mode).save(path)
    return path


def split_arrays(seed: int = 0, size: int = SIZE):
    """{split: (uint8 images [n, size, size, 3], per-image class names)}."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in SPLIT_CLASSES.items():
        names = [w for w in wnids(split, n) for _ in range(PER_CLASS)]
        out[split] = (rng.integers(0, 256, (len(names), size, size, 3), dtype=np.uint8), names)
    return out


def make_tree(root: Path, seed: int = 0) -> Path:
    """mini-ImageNet as ``{train,val,test}/<wnid>/*.jpg``."""
    rng = np.random.default_rng(seed)
    for split, n in SPLIT_CLASSES.items():
        for wnid in wnids(split, n):
            for j in range(PER_CLASS):
                write_image(root / split / wnid / f"{wnid}_{j}.jpg", rng, (SIZE + 7, SIZE))
    return root


def make_csv(root: Path, seed: int = 0) -> Path:
    """Ravi & Larochelle: ``{train,val,test}.csv`` (filename,label) and ``images/``."""
    rng = np.random.default_rng(seed)
    for split, n in SPLIT_CLASSES.items():
        rows = ["filename,label"]
        for wnid in wnids(split, n):
            for j in range(PER_CLASS):
                name = f"{wnid}{j + 1:08d}.jpg"
                write_image(root / "images" / name, rng, (SIZE + 10, SIZE + 3))
                rows.append(f"{name},{wnid}")
        (root / f"{split}.csv").write_text("\n".join(rows) + "\n")
    return root


def make_pickle_cache(root: Path, seed: int = 0, val_name: str = "val") -> Path:
    """``mini-imagenet-cache-{train,val,test}.pkl`` with image_data and class_dict."""
    root.mkdir(parents=True, exist_ok=True)
    for split, (images, names) in split_arrays(seed).items():
        class_dict: dict[str, list[int]] = {}
        for i, name in enumerate(names):
            class_dict.setdefault(name, []).append(i)
        tag = val_name if split == "val" else split
        with (root / f"mini-imagenet-cache-{tag}.pkl").open("wb") as f:
            pickle.dump({"image_data": images, "class_dict": class_dict}, f, protocol=4)
    return root


class Py2Pickler(pickle._Pickler):
    """Writes ``bytes``/``str`` as Python-2 ``str`` (BINSTRING), like the MetaOptNet files."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj):
        data = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str
    dispatch[str] = save_py2_str


def py2_pickle(obj) -> bytes:
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue().replace(b"numpy._core.multiarray", b"numpy.core.multiarray")


def make_rfs(root: Path, seed: int = 0, with_names: bool = True) -> Path:
    """MetaOptNet/RFS ``miniImageNet_category_split_*.pickle`` (Python-2 style pickles)."""
    root.mkdir(parents=True, exist_ok=True)
    files = {"train": "train_phase_train", "val": "val", "test": "test"}
    label = 0
    for split, (images, names) in split_arrays(seed).items():
        order = list(dict.fromkeys(names))
        catname2label = {n: label + i for i, n in enumerate(order)}
        labels = [catname2label[n] for n in names]
        label += len(order)
        obj = {"data": images, "labels": labels}
        if with_names:
            obj["catname2label"] = catname2label
        path = root / f"miniImageNet_category_split_{files[split]}.pickle"
        path.write_bytes(py2_pickle(obj))
    return root


def cub_folders(n: int = 8) -> list[str]:
    return [f"{i + 1:03d}.Bird_{i + 1}" for i in range(n)]


def make_cub(root: Path, seed: int = 0, classes: int = 8, per_class: int = PER_CLASS) -> Path:
    """``root/CUB_200_2011/images/<NNN.Name>/*.jpg`` plus one greyscale and one CMYK JPEG."""
    rng = np.random.default_rng(seed)
    images = root / "CUB_200_2011" / "images"
    for k, folder in enumerate(cub_folders(classes)):
        for j in range(per_class):
            mode = "L" if (k, j) == (3, 0) else "CMYK" if (k, j) == (3, 1) else "RGB"
            write_image(images / folder / f"{folder[4:]}_{j:04d}.jpg", rng, (SIZE + 5, SIZE),
                        mode)
    (root / "CUB_200_2011" / "README").write_text("fixture\n")
    return root


def make_cub_tgz(root: Path, seed: int = 0, evil: bool = False) -> Path:
    """``root/CUB_200_2011.tgz`` of ``make_cub``; ``evil`` adds a ``../escape.jpg`` member."""
    src = make_cub(root.parent / (root.name + "_src"), seed)
    root.mkdir(parents=True, exist_ok=True)
    with tarfile.open(root / "CUB_200_2011.tgz", "w:gz") as tar:
        tar.add(src / "CUB_200_2011", arcname="CUB_200_2011")
        if evil:
            data = (src / "CUB_200_2011" / "images").glob("*/*.jpg").__next__().read_bytes()
            info = tarfile.TarInfo("CUB_200_2011/images/../../escape.jpg")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return root


def make_chen_json(root: Path, prefix: str = "/home/someone/filelists/CUB/CUB_200_2011/images"
                   ) -> Path:
    """Chen et al.'s base/val/novel.json for ``make_cub``'s classes, with a foreign prefix."""
    folders = cub_folders()
    images = root / "CUB_200_2011" / "images"
    rule = {"base": lambda i: i % 2 == 0, "val": lambda i: i % 4 == 1,
            "novel": lambda i: i % 4 == 3}
    for name, keep in rule.items():
        files, labels = [], []
        for i, folder in enumerate(folders):
            if keep(i):
                for p in sorted((images / folder).iterdir()):
                    files.append(f"{prefix}/{folder}/{p.name}")
                    labels.append(i)
        meta = {"label_names": folders, "image_names": files, "image_labels": labels}
        (root / f"{name}.json").write_text(json.dumps(meta))
    return root


def make_folder(root: Path, seed: int = 0, split_layout: bool = True) -> Path:
    """Any image folder: mixed formats, modes and sizes; split layout or one class per folder."""
    rng = np.random.default_rng(seed)
    kinds = [("png", "RGBA"), ("jpg", "L"), ("jpg", "CMYK"), ("png", "I;16"), ("gif", "P"),
             ("bmp", "RGB"), ("webp", "RGB"), ("png", "L")]
    splits = SPLIT_CLASSES if split_layout else {"": 4}
    k = 0
    for split, n in splits.items():
        for c in range(n):
            for j in range(PER_CLASS):
                ext, mode = kinds[k % len(kinds)]
                k += 1
                size = (SIZE + 3 * j, SIZE + 2 * c)
                write_image(root / split / f"class_{split}{c}" / f"img{j}.{ext}", rng, size, mode)
    return root
