"""Decoded image sets are kept in memory and on disk, and any change to the files decodes again."""

from __future__ import annotations

import logging
import zipfile

import numpy as np
import pytest
from PIL import Image

from metagna_tf.data import decoded_cache, omniglot


def make_set(root, name="images_background_small1", characters=3, drawings=2, as_zip=True):
    """A tiny Omniglot set: ``characters`` characters of one alphabet, distinct drawings."""
    folder = root / "src" / name
    for c in range(characters):
        char = folder / "Alpha" / f"character{c + 1:02d}"
        char.mkdir(parents=True)
        for d in range(drawings):
            img = Image.new("L", (105, 105), 255)
            img.paste(0, (10 * c, 10 * d, 10 * c + 30, 10 * d + 30))
            img.save(char / f"{c:02d}_{d:02d}.png")
    if not as_zip:
        return folder
    archive = root / f"{name}.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(folder.rglob("*.png")):
            zf.write(path, path.relative_to(folder.parent))
    return archive


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("METAGNA_CACHE_DIR", str(folder))
    monkeypatch.setattr(decoded_cache, "_memory", {})
    return folder


def decode_counter(monkeypatch):
    calls = []
    real = omniglot.decode_image

    def counting(*args, **kwargs):
        calls.append(args[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(omniglot, "decode_image", counting)
    return calls


def test_a_set_is_decoded_once_then_read_from_memory_and_disk(tmp_path, cache, monkeypatch):
    make_set(tmp_path)
    calls = decode_counter(monkeypatch)
    first = omniglot.read_characters(tmp_path, 28)
    assert len(calls) == 6
    assert omniglot.read_characters(tmp_path, 28) is first and len(calls) == 6  # memory
    files = list(cache.glob("omniglot-*.npz"))
    assert len(files) == 1 and not list(cache.glob("*.partial"))
    monkeypatch.setattr(decoded_cache, "_memory", {})  # a new process
    again = omniglot.read_characters(tmp_path, 28)
    assert len(calls) == 6  # from disk
    assert again.keys() == first.keys() == {"images_background_small1"}
    for key, arr in first["images_background_small1"].items():
        np.testing.assert_array_equal(again["images_background_small1"][key], arr)
        assert arr.dtype == np.uint8 and arr.shape == (2, 28, 28, 1)
        assert not arr.flags.writeable  # shared: a caller can't change what the next one gets
    omniglot.read_characters(tmp_path, 32)  # other options, another entry
    assert len(calls) == 12 and len(list(cache.glob("omniglot-*.npz"))) == 2


@pytest.mark.parametrize("as_zip", [True, False])
def test_changed_files_are_decoded_again(tmp_path, cache, monkeypatch, as_zip):
    source = make_set(tmp_path, as_zip=as_zip)
    if not as_zip:
        (tmp_path / source.name).symlink_to(source, target_is_directory=True)
    calls = decode_counter(monkeypatch)
    before = omniglot.read_characters(tmp_path, 28)
    png = next(source.rglob("*.png")) if not as_zip else None
    if as_zip:  # the same names, one drawing changed
        with zipfile.ZipFile(source) as zf:
            members = {i.filename: zf.read(i) for i in zf.infolist()}
        name = sorted(members)[0]
        img = Image.new("L", (105, 105), 0)
        path = tmp_path / "changed.png"
        img.save(path)
        members[name] = path.read_bytes()
        with zipfile.ZipFile(source, "w") as zf:
            for n, data in members.items():
                zf.writestr(n, data)
    else:
        Image.new("L", (105, 105), 0).save(png)
    monkeypatch.setattr(decoded_cache, "_memory", {})
    after = omniglot.read_characters(tmp_path, 28)
    assert len(calls) == 12
    changed = [k for k, v in before["images_background_small1"].items()
               if not np.array_equal(v, after["images_background_small1"][k])]
    assert len(changed) == 1


def test_an_unreadable_cache_file_is_decoded_again_and_replaced(tmp_path, cache, monkeypatch,
                                                                 caplog):
    make_set(tmp_path)
    good = omniglot.read_characters(tmp_path, 28)
    (path,) = cache.glob("omniglot-*.npz")
    path.write_bytes(path.read_bytes()[:100])  # truncated
    monkeypatch.setattr(decoded_cache, "_memory", {})
    with caplog.at_level(logging.WARNING):
        again = omniglot.read_characters(tmp_path, 28)
    assert f"{path}: unreadable decoded-image cache" in caplog.text
    for key, arr in good["images_background_small1"].items():
        np.testing.assert_array_equal(again["images_background_small1"][key], arr)
    monkeypatch.setattr(decoded_cache, "_memory", {})
    calls = decode_counter(monkeypatch)
    omniglot.read_characters(tmp_path, 28)
    assert calls == []  # the replaced file reads


def test_off_writes_nothing_and_an_unwritable_folder_only_warns(tmp_path, monkeypatch, caplog):
    make_set(tmp_path)
    monkeypatch.setattr(decoded_cache, "_memory", {})
    monkeypatch.setenv("METAGNA_CACHE_DIR", "off")
    assert decoded_cache.cache_dir() is None
    omniglot.read_characters(tmp_path, 28)
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    monkeypatch.setattr(decoded_cache, "_memory", {})
    monkeypatch.setenv("METAGNA_CACHE_DIR", str(blocker / "cache"))
    with caplog.at_level(logging.WARNING):
        by_set = omniglot.read_characters(tmp_path, 28)
    assert len(by_set["images_background_small1"]) == 3
    assert "could not write the decoded-image cache" in caplog.text and str(blocker) in caplog.text


def test_the_default_folder_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.delenv("METAGNA_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert decoded_cache.cache_dir() == tmp_path / "metagna_tf"
