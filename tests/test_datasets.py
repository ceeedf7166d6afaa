"Tests for cellnb.datasets: CRCHisto loader (real and a tiny fake in the published layout), cache, load_dataset specs."
import os
import numpy as np
import pandas as pd
import pytest
import scipy.io as sio
from PIL import Image
from cellnb.core import CellnbError, require_crchisto
from cellnb import datasets
from cellnb.datasets import CRCHISTO_CLASSES, load_crchisto, load_dataset


_USER_CACHE = os.environ.get("CELLNB_CACHE_DIR")


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CELLNB_CACHE_DIR", str(tmp_path / "cache"))


def fake_crchisto(root, key="detection"):
    "Two 100x100 tiles in CRCHisto's layout; 1-based x,y."
    rng = np.random.default_rng(0)
    for n in (1, 2):
        d = root / "Classification" / f"img{n}"; d.mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (100, 100, 3), dtype=np.uint8)).save(d / f"img{n}.bmp")
        for k, c in enumerate(CRCHISTO_CLASSES):
            xy = np.array([[1.0, 1.0], [50.0 + k, 60.0], [0.4, 100.0]]) if c != "others" else np.zeros((0, 2))
            sio.savemat(d / f"img{n}_{c}.mat", {key: xy})
    return root


def test_crchisto_published_counts(monkeypatch):
    root = require_crchisto()
    if _USER_CACHE: monkeypatch.setenv("CELLNB_CACHE_DIR", _USER_CACHE)   # the real set: reuse the user's cache
    else: monkeypatch.delenv("CELLNB_CACHE_DIR")
    cs = load_crchisto(root, crop=48)
    assert cs.class_counts().to_dict() == {"epithelial": 7722, "fibroblast": 5712, "inflammatory": 6971, "others": 2039}
    assert len(set(cs.groups)) == 100 and cs.source_mpp == 0.5 and cs.size == 48
    assert set(cs.groups) == {f"img{i}" for i in range(1, 101)}


def test_fake_layout_coordinates_and_groups(tmp_path):
    root = fake_crchisto(tmp_path / "crc")
    cs = load_crchisto(root, crop=40, cache=False)
    assert cs.class_counts().tolist() == [6, 6, 6, 0] and sorted(set(cs.groups)) == ["img1", "img2"]
    tile = np.array(Image.open(root / "Classification" / "img1" / "img1.bmp"))
    first = cs[np.flatnonzero((cs.groups == "img1") & (cs.labels.numpy() == 0))]
    assert first.images[0, :, 20, 20].tolist() == tile[0, 0].tolist()           # (1,1) 1-based -> pixel (0,0)
    assert first.images[1, :, 20, 20].tolist() == tile[59, 49].tolist()         # (50,60) -> row 59, col 49
    assert first.meta.x.tolist()[:2] == [0.0, 49.0] and bool(first.meta.padded[0])
    assert "clipped" in first.meta.note[2] and first.meta.source[0] == "Classification/img1/img1.bmp"


def test_cache_second_load_does_not_rebuild(tmp_path, monkeypatch):
    root = fake_crchisto(tmp_path / "crc")
    a = load_crchisto(root, crop=40)
    monkeypatch.setattr(datasets, "_build_crchisto", lambda *a, **k: pytest.fail("rebuilt although cached"))
    b = load_crchisto(root, crop=40)
    assert b.fingerprint() == a.fingerprint() and b.class_counts().equals(a.class_counts())


def test_mat_without_key(tmp_path):
    root = fake_crchisto(tmp_path / "crc", key="points")
    with pytest.raises(CellnbError, match=r"img1_epithelial\.mat has no 'detection' key") as e:
        load_crchisto(root, crop=40, cache=False)
    assert "\n" not in str(e.value)


def test_corrupt_mat(tmp_path):
    root = fake_crchisto(tmp_path / "crc")
    (root / "Classification" / "img2" / "img2_fibroblast.mat").write_bytes(b"garbage")
    with pytest.raises(CellnbError, match="img2_fibroblast.mat"):
        load_crchisto(root, crop=40, cache=False)


@pytest.mark.parametrize("spec,part", [
    ("imagenet", "unknown dataset spec 'imagenet'"),
    ("folder:/no/such/dir", "/no/such/dir"),
    ("csv:/no/such/file.csv", "does not exist"),
    ("crchisto:/no/such/place", "does not exist"),
    ("csv:", "has no path"),
    ("", "is empty"),
])
def test_load_dataset_bad_spec(spec, part):
    with pytest.raises(CellnbError) as e: load_dataset(spec)
    assert part in str(e.value) and "\n" not in str(e.value)


def test_load_dataset_specs(tmp_path):
    root = fake_crchisto(tmp_path / "crc")
    cs = load_dataset(f"crchisto:{root}", crop=40)
    assert len(cs) == 18
    sub = load_dataset(f"crchisto:{root}", crop=40, n_per_class=2, seed=1)
    assert sub.n_per_class == {"epithelial": 2, "fibroblast": 2, "inflammatory": 2, "others": 0} and len(sub.root) == 18
    cs.save(tmp_path / "saved")
    assert load_dataset(f"cellset:{tmp_path / 'saved'}").fingerprint() == cs.fingerprint()
    d = tmp_path / "folder"
    for i in range(4):
        (d / ("x" if i % 2 else "y")).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((44, 44, 3), i * 40, np.uint8)).save(d / ("x" if i % 2 else "y") / f"p{i // 2}_{i}.png")
    pd.DataFrame(dict(path=["y/p0_0.png", "x/p0_1.png", "y/p1_2.png", "x/p1_3.png"], group=["A", "A", "B", "B"])).to_csv(d / "groups.csv", index=False)
    fo = load_dataset(f"folder:{d}")
    assert fo.classes == ["x", "y"] and sorted(fo.groups) == ["A", "A", "B", "B"] and fo.size == 44
    pd.DataFrame(dict(path=["y/p0_0.png", "x/p0_1.png"], label=["y", "x"], group=["A", "B"])).to_csv(d / "cells.csv", index=False)
    assert len(load_dataset(f"csv:{d / 'cells.csv'}", crop=48)) == 2


def test_load_dataset_synthetic():
    pytest.importorskip("cellnb.synthetic")
    cs = load_dataset("synthetic", n_per_class=8, seed=0)
    assert cs.class_counts().tolist() == [8] * cs.n_classes
