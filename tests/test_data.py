"Tests for cellnb.data: CellSet, constructors, bad input, group splits, flag_limit, save/load."
import warnings
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from cellnb.core import CellnbError
from cellnb.data import CellSet, group_split, group_folds, flag_limit, read_rgb, UNLABELLED


def toy(n=300, n_groups=30, n_classes=3, size=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    imgs = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    return CellSet(imgs, np.arange(n) % n_classes, [f"c{i}" for i in range(n_classes)], [f"pt{i % n_groups}" for i in range(n)])


def write_folder(root, classes=("a", "b"), n=4, size=48, fmt="png"):
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / c / f"pt{i % 2}_{i}.{fmt}")
    return root


def one_line_error(fn, *parts):
    with pytest.raises(CellnbError) as e: fn()
    msg = str(e.value)
    assert "\n" not in msg, msg
    for p in parts: assert p in msg, (p, msg)
    return msg


# ---------------------------------------------------------------- CellSet basics
def test_subset_keeps_root():
    cs = toy()
    sub = cs[np.arange(10, 100, 3)][5:]
    assert sub.root is cs and cs.root is cs
    assert np.array_equal(sub.root_idx, np.arange(10, 100, 3)[5:])
    assert torch.equal(sub.images, cs.images[torch.from_numpy(sub.root_idx)])
    m = cs[cs.labels.numpy() == 1]
    assert m.class_counts().tolist() == [0, 100, 0] and m.root is cs
    assert cs.size == 40 and cs.n_classes == 3 and len(cs[[]]) == 0


def test_fingerprint():
    cs = toy()
    assert cs.fingerprint() == toy().fingerprint() != toy(seed=1).fingerprint()
    renamed = CellSet(cs.images, cs.labels, ["x", "y", "z"], cs.groups)
    assert renamed.fingerprint() != cs.fingerprint()


def test_save_load_roundtrip(tmp_path):
    cs = toy()
    cs.meta["extra"] = np.arange(len(cs))
    sub = flag_limit(cs, 20, seed=3)
    sub.source_mpp = 0.25
    sub.save(tmp_path / "s")
    back = CellSet.load(tmp_path / "s")
    assert torch.equal(back.images, sub.images) and torch.equal(back.labels, sub.labels)
    assert back.classes == sub.classes and list(back.groups) == list(sub.groups)
    assert back.n_per_class == sub.n_per_class == {"c0": 20, "c1": 20, "c2": 20}
    assert back.source_mpp == 0.25 and back.root is back and np.array_equal(back.root_idx, np.arange(len(sub)))
    assert back.fingerprint() == sub.fingerprint()
    assert list(back.meta.extra) == list(sub.meta.extra)
    one_line_error(lambda: CellSet.load(tmp_path / "nothing"), "is not a saved CellSet")


# ---------------------------------------------------------------- splits
@pytest.mark.parametrize("seed", [0, 1, 7])
def test_no_group_crosses_split(seed):
    cs = toy(600, n_groups=40)
    tr, va, te = group_split(cs, valid=0.1, test=0.2, seed=seed)
    parts = [set(p.groups) for p in (tr, va, te)]
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    assert sorted(np.concatenate([p.root_idx for p in (tr, va, te)]).tolist()) == list(range(600))
    for p in (tr, va, te): assert p.class_counts().min() > 0 and p.root is cs


def test_group_folds_disjoint():
    cs = toy(600, n_groups=40)
    folds = group_folds(cs, k=4, seed=2)
    assert len(folds) == 4
    for a, b in folds: assert not set(a.groups) & set(b.groups)
    assert sorted(np.concatenate([b.root_idx for _, b in folds]).tolist()) == list(range(600))


# ---------------------------------------------------------------- flag_limit
def test_flag_limit_nested_and_counts():
    cs = toy(300)
    cs = CellSet(cs.images, np.r_[np.zeros(200, int), np.ones(80, int), np.full(20, 2)], cs.classes, cs.groups)
    subs = {n: flag_limit(cs, n, seed=5) for n in (4, 16, 64, 256)}
    for a, b in zip((4, 16, 64), (16, 64, 256)):
        assert set(subs[a].root_idx) <= set(subs[b].root_idx)
    assert subs[64].n_per_class == {"c0": 64, "c1": 64, "c2": 20}
    assert subs[256].n_per_class == {"c0": 200, "c1": 80, "c2": 20}
    assert np.array_equal(flag_limit(cs, 16, seed=5).root_idx, subs[16].root_idx)
    assert set(flag_limit(cs, 16, seed=6).root_idx) != set(subs[16].root_idx)
    # nesting holds on a train subset too (the study applies flag_limit after group_split)
    tr = group_split(toy(600, 40))[0]
    assert set(flag_limit(tr, 10, 1).root_idx) <= set(flag_limit(tr, 30, 1).root_idx)


@pytest.mark.parametrize("n", [0, -3, 2.5])
def test_flag_limit_bad_n(n):
    one_line_error(lambda: flag_limit(toy(), n), "flag_limit n=")


# ---------------------------------------------------------------- constructors
def test_from_folder_groups_and_conversion(tmp_path):
    root = write_folder(tmp_path / "d", n=4)
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(root / "a" / "pt0_grey.png")
    Image.fromarray(np.zeros((48, 48, 4), np.uint8)).save(root / "b" / "pt1_rgba.png")
    Image.fromarray(np.full((48, 48), 1000, np.uint16)).save(root / "b" / "pt1_deep.tif")
    cs = CellSet.from_folder(root, groups=r"(pt\d)_")
    assert cs.size == 48 and cs.classes == ["a", "b"] and set(cs.groups) == {"pt0", "pt1"}
    notes = dict(zip(cs.meta.source, cs.meta.note))
    assert notes["a/pt0_grey.png"] == "grey->RGB; resized 64x64->48x48"
    assert notes["b/pt1_rgba.png"] == "RGBA->RGB" and "16-bit->8-bit" in notes["b/pt1_deep.tif"]
    pd.DataFrame(dict(path=list(cs.meta.source), group=[f"P{i}" for i in range(len(cs))])).to_csv(tmp_path / "g.csv", index=False)
    assert list(CellSet.from_folder(root, groups=tmp_path / "g.csv").groups) == [f"P{i}" for i in range(len(cs))]
    with pytest.warns(UserWarning, match=r"a split can put cells of one patient or tile on both sides; give the groups: .*--groups on the command line, groups: in a study config"):
        cs2 = CellSet.from_folder(root)
    assert len(set(cs2.groups)) == len(cs2)


def test_from_csv_and_points(tmp_path):
    root = write_folder(tmp_path / "d", n=3)
    rows = [dict(path=f"{c}/pt{i % 2}_{i}.png", label=c, group=f"g{i}") for c in "ab" for i in range(3)]
    pd.DataFrame(rows).to_csv(tmp_path / "cells.csv", index=False)
    cs = CellSet.from_csv(tmp_path / "cells.csv", root=root)
    assert len(cs) == 6 and cs.classes == ["a", "b"] and cs.labels.tolist() == [0, 0, 0, 1, 1, 1]
    tile = np.arange(100 * 80 * 3).reshape(100, 80, 3).astype(np.uint8)
    pts = pd.DataFrame(dict(tile=["t"] * 2, x=[40, 0], y=[50, 99], label=["a", "b"]))
    ps = CellSet.from_points({"t": tile}, pts, crop=40)
    assert ps.images[0, :, 20, 20].tolist() == tile[50, 40].tolist()
    assert ps.images[1, :, 20, 20].tolist() == tile[99, 0].tolist()
    assert ps.meta.padded.tolist() == [False, True] and list(ps.groups) == ["t", "t"]


def test_unlabelled_folder_and_csv(tmp_path):
    "New cells: crops in the folder itself, or a CSV of paths; any label column is ignored, a missing group is the path."
    root = write_folder(tmp_path / "d", n=3)
    flat = tmp_path / "new"; flat.mkdir()
    for f in sorted((root / "a").iterdir()): (flat / f.name).write_bytes(f.read_bytes())
    (flat / ".DS_Store").write_bytes(b"x")
    fs = CellSet.from_folder(flat, groups=r"(pt\d)", labelled=False)
    assert fs.classes == [UNLABELLED] and fs.labels.tolist() == [0, 0, 0] and list(fs.groups) == ["pt0", "pt0", "pt1"]
    assert torch.equal(fs.images, CellSet.from_folder(root, groups=r"(pt\d)")[:3].images)
    pd.DataFrame(dict(path=["a/pt0_0.png", "b/pt1_1.png"], label=["zebra", ""], group=["p1", ""])).to_csv(tmp_path / "c.csv", index=False)
    cs = CellSet.from_csv(tmp_path / "c.csv", root=root, labelled=False)
    assert cs.classes == [UNLABELLED] and list(cs.groups) == ["p1", "b/pt1_1.png"] and list(cs.meta.source) == ["a/pt0_0.png", "b/pt1_1.png"]
    # a groups CSV beside the crops is not read as a crop; classes= belongs to labelled cells
    pd.DataFrame(dict(path=[f.name for f in sorted(flat.glob("*.png"))], group=["x", "y", "z"])).to_csv(flat / "groups.csv", index=False)
    assert list(CellSet.from_folder(flat, groups=flat / "groups.csv", labelled=False).groups) == ["x", "y", "z"]
    one_line_error(lambda: CellSet.from_folder(flat, labelled=False, classes=["a"]), "classes=['a']", "labelled=False")
    one_line_error(lambda: CellSet.from_csv(tmp_path / "c.csv", root=root, labelled=False, classes=["a"]), "classes=['a']")
    # the labelled readers point to labelled=False when the layout is that of new cells
    pd.DataFrame(dict(path=["a/pt0_0.png"])).to_csv(tmp_path / "p.csv", index=False)
    one_line_error(lambda: CellSet.from_csv(tmp_path / "p.csv", root=root), "no column 'label'", "labelled=False")
    (flat / "groups.csv").unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore"); one_line_error(lambda: CellSet.from_folder(flat), "no class sub-folders", "labelled=False")


# ---------------------------------------------------------------- bad input (issue 2), one case each
def _empty_folder(tmp_path):
    (tmp_path / "empty").mkdir(); return lambda: CellSet.from_folder(tmp_path / "empty"), "is empty"

def _missing_folder(tmp_path):
    return lambda: CellSet.from_folder(tmp_path / "missing"), "does not exist"

def _class_no_images(tmp_path):
    root = write_folder(tmp_path / "d"); (root / "c").mkdir(); (root / "c" / ".DS_Store").write_bytes(b"x")
    return lambda: CellSet.from_folder(root, groups=r"(pt\d)"), "class folder"

def _corrupt_image(tmp_path):
    root = write_folder(tmp_path / "d"); (root / "a" / "pt0_broken.png").write_bytes(b"\x89PNG not really")
    return lambda: CellSet.from_folder(root, groups=r"(pt\d)"), "pt0_broken.png"

def _truncated_image(tmp_path):
    root = write_folder(tmp_path / "d", fmt="jpg"); f = root / "b" / "pt1_1.jpg"; f.write_bytes(f.read_bytes()[:200])
    return lambda: CellSet.from_folder(root, groups=r"(pt\d)"), "pt1_1.jpg"

def _unknown_format(tmp_path):
    root = write_folder(tmp_path / "d"); Image.fromarray(np.zeros((48, 48, 3), np.uint8)).save(root / "a" / "pt0_x.gif")
    return lambda: CellSet.from_folder(root, groups=r"(pt\d)"), "unknown image format '.gif'"

def _csv_missing_column(tmp_path):
    root = write_folder(tmp_path / "d"); pd.DataFrame(dict(path=["a/pt0_0.png"], label=["a"])).to_csv(tmp_path / "c.csv", index=False)
    return lambda: CellSet.from_csv(tmp_path / "c.csv", root=root), "no column 'group'"

def _csv_unknown_label(tmp_path):
    root = write_folder(tmp_path / "d")
    pd.DataFrame(dict(path=["a/pt0_0.png", "b/pt1_1.png"], label=["a", "zebra"], group=["1", "2"])).to_csv(tmp_path / "c.csv", index=False)
    return lambda: CellSet.from_csv(tmp_path / "c.csv", root=root, classes=["a", "b"]), "row 2: label 'zebra'"

def _csv_bad_row(tmp_path):
    root = write_folder(tmp_path / "d")
    pd.DataFrame(dict(path=["a/pt0_0.png", "a/nope.png"], label=["a", "a"], group=["1", "2"])).to_csv(tmp_path / "c.csv", index=False)
    return lambda: CellSet.from_csv(tmp_path / "c.csv", root=root), "row 2: image"

def _unlabelled_folder_with_subfolders(tmp_path):
    root = write_folder(tmp_path / "d")
    return lambda: CellSet.from_folder(root, labelled=False), "has sub-folders (a, b)"

def _unlabelled_csv_empty_path(tmp_path):
    root = write_folder(tmp_path / "d"); pd.DataFrame(dict(path=["a/pt0_0.png", " "], group=["g1", "g2"])).to_csv(tmp_path / "c.csv", index=False)
    return lambda: CellSet.from_csv(tmp_path / "c.csv", root=root, labelled=False), "row 2: empty 'path'"

def _unlabelled_csv_no_path(tmp_path):
    pd.DataFrame(dict(file=["a/pt0_0.png"])).to_csv(tmp_path / "c.csv", index=False)
    return lambda: CellSet.from_csv(tmp_path / "c.csv", labelled=False), "no column 'path'"

def _point_outside(tmp_path):
    pts = pd.DataFrame(dict(tile=["t", "t"], x=[5, 80], y=[5, 5], label=["a", "b"]))
    return lambda: CellSet.from_points({"t": np.zeros((60, 60, 3), np.uint8)}, pts, crop=40), "points row 1"

def _nan_coordinates(tmp_path):
    pts = pd.DataFrame(dict(tile=["t", "t"], x=[5, 6], y=[np.nan, 5], label=["a", "b"]))
    return lambda: CellSet.from_points({"t": np.zeros((60, 60, 3), np.uint8)}, pts, crop=40), "points row 0"

def _crop_too_small_points(tmp_path):
    pts = pd.DataFrame(dict(tile=["t"], x=[5], y=[5], label=["a"]))
    return lambda: CellSet.from_points({"t": np.zeros((60, 60, 3), np.uint8)}, pts, crop=32), "crop size 32 < 40"

def _crop_too_small_folder(tmp_path):
    root = write_folder(tmp_path / "d", size=32)
    return lambda: CellSet.from_folder(root, groups=r"(pt\d)"), "crop size 32 < 40"

def _crop_too_small_tensor(tmp_path):
    return lambda: CellSet(torch.zeros(2, 3, 24, 24, dtype=torch.uint8), [0, 1], ["a", "b"]), "crop size 24 < 40"

def _split_leaves_class_empty(tmp_path):
    cs = toy(300, 30)
    y = np.where(np.array([g == "pt0" for g in cs.groups]), 2, cs.labels.numpy() % 2)   # class c2 lives in one group only
    cs = CellSet(cs.images, y, cs.classes, cs.groups)
    return lambda: group_split(cs), "class 'c2'"

def _folds_leave_class_empty(tmp_path):
    cs = toy(300, 30)
    cs = CellSet(cs.images, np.where(np.array([g == "pt0" for g in cs.groups]), 2, cs.labels.numpy() % 2), cs.classes, cs.groups)
    return lambda: group_folds(cs, k=2), "class 'c2'"

def _flag_limit_zero(tmp_path):
    return lambda: flag_limit(toy(), 0), "flag_limit n=0"

def _flag_limit_seed_none(tmp_path):
    return lambda: flag_limit(toy(), 5, seed=None), "seed=None is invalid"

def _split_seed_negative(tmp_path):
    return lambda: group_split(toy(), seed=-1), "seed=-1 is invalid"

def _point_without_label(tmp_path):
    pts = pd.DataFrame(dict(tile=["t"] * 3, x=[20, 30, 40], y=[20, 30, 40], label=["a", "b", None]))
    return lambda: CellSet.from_points({"t": np.zeros((60, 60, 3), np.uint8)}, pts, crop=40), "points row 2: empty label"

def _point_without_group(tmp_path):
    pts = pd.DataFrame(dict(tile=["t"] * 2, x=[20, 30], y=[20, 30], label=["a", "b"], group=["p1", np.nan]))
    return lambda: CellSet.from_points({"t": np.zeros((60, 60, 3), np.uint8)}, pts, crop=40), "points row 1: empty group"

def _crop_not_whole(tmp_path):
    root = write_folder(tmp_path / "d")
    return lambda: CellSet.from_folder(root, groups=r"(pt\d)", size=48.5), "crop size 48.5 is not a whole number"

def _groups_csv_empty(tmp_path):
    root = write_folder(tmp_path / "d"); (tmp_path / "g.csv").write_text("")
    return lambda: CellSet.from_folder(root, groups=tmp_path / "g.csv"), "cannot parse groups CSV"

def _groups_csv_blank_group(tmp_path):
    root = write_folder(tmp_path / "d")
    pd.DataFrame(dict(path=["pt0_0.png", "pt1_1.png"], group=["p1", " "])).to_csv(tmp_path / "g.csv", index=False)
    return lambda: CellSet.from_folder(root, groups=tmp_path / "g.csv"), "g.csv row 2: empty group"

def _groups_regex_captures_nothing(tmp_path):
    root = write_folder(tmp_path / "d")
    return lambda: CellSet.from_folder(root, groups=r"(zz)?pt"), "captures no group"

def _damaged_save(tmp_path):
    p = toy(6).save(tmp_path / "cs"); f = p / "cells.safetensors"; f.write_bytes(f.read_bytes()[:100])
    return lambda: CellSet.load(p), "is damaged"

def _small_crop_among_larger(tmp_path):
    root = write_folder(tmp_path / "d"); Image.fromarray(np.zeros((48, 30, 3), np.uint8)).save(root / "b" / "pt0_thin.png")
    return lambda: CellSet.from_folder(root, groups=r"(pt\d)"), "crop b/pt0_thin.png is 30x48 px, under 40 px (1 such crop(s) among 9)"

def _csv_label_reads_as_missing(tmp_path):
    write_folder(tmp_path / "d")
    pd.DataFrame(dict(path=["d/a/pt0_0.png", "d/b/pt1_1.png"], label=["a", "n/a"], group=["p", "q"])).to_csv(tmp_path / "c.csv", index=False)
    return lambda: CellSet.from_csv(tmp_path / "c.csv"), "c.csv row 2: label 'n/a' reads as a missing value"

def _csv_group_reads_as_missing(tmp_path):
    write_folder(tmp_path / "d")
    pd.DataFrame(dict(path=["d/a/pt0_0.png", "d/b/pt1_1.png"], label=["a", "b"], group=["NaN", "q"])).to_csv(tmp_path / "c.csv", index=False)
    return lambda: CellSet.from_csv(tmp_path / "c.csv"), "c.csv row 1: group 'NaN' reads as a missing value"

def _csv_crop_listed_twice(tmp_path):
    write_folder(tmp_path / "d")
    pd.DataFrame(dict(path=["d/a/pt0_0.png", "d/b/pt1_1.png", "d/a/pt0_0.png"], label=["a", "b", "b"], group=["p", "q", "p"])).to_csv(tmp_path / "c.csv", index=False)
    return lambda: CellSet.from_csv(tmp_path / "c.csv"), "c.csv rows 1 and 3 list the same crop d/a/pt0_0.png"

def _groups_csv_is_a_folder(tmp_path):
    root = write_folder(tmp_path / "d"); (tmp_path / "g.csv").mkdir()
    return lambda: CellSet.from_folder(root, groups=tmp_path / "g.csv"), "g.csv is a folder"

BAD = [_small_crop_among_larger, _csv_label_reads_as_missing, _csv_group_reads_as_missing, _csv_crop_listed_twice, _groups_csv_is_a_folder,
       _empty_folder, _missing_folder, _class_no_images, _corrupt_image, _truncated_image, _unknown_format,
       _csv_missing_column, _csv_unknown_label, _csv_bad_row, _unlabelled_folder_with_subfolders, _unlabelled_csv_empty_path,
       _unlabelled_csv_no_path, _point_outside, _nan_coordinates,
       _crop_too_small_points, _crop_too_small_folder, _crop_too_small_tensor, _split_leaves_class_empty,
       _folds_leave_class_empty, _flag_limit_zero, _point_without_label, _point_without_group, _crop_not_whole,
       _groups_csv_empty, _groups_csv_blank_group, _groups_regex_captures_nothing, _damaged_save,
       _flag_limit_seed_none, _split_seed_negative]

@pytest.mark.parametrize("case", BAD, ids=[f.__name__.strip("_") for f in BAD])
def test_bad_input(case, tmp_path):
    fn, part = case(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        one_line_error(fn, part)


@pytest.mark.parametrize("col", ["path", "label", "group"])
def test_csv_each_missing_column(col, tmp_path):
    root = write_folder(tmp_path / "d")
    df = pd.DataFrame(dict(path=["a/pt0_0.png"], label=["a"], group=["1"])).drop(columns=col)
    df.to_csv(tmp_path / "c.csv", index=False)
    one_line_error(lambda: CellSet.from_csv(tmp_path / "c.csv", root=root), f"no column '{col}'", "c.csv")


def test_split_error_says_why():
    cs = toy(300, 30)
    cs = CellSet(cs.images, np.where(np.array([g == "pt0" for g in cs.groups]), 2, cs.labels.numpy() % 2), cs.classes, cs.groups)
    msg = one_line_error(lambda: group_split(cs), "class 'c2'", "1 group(s)", "10 cells")
    assert "drop the class" in msg


def test_whole_float_crop_size(tmp_path):
    root = write_folder(tmp_path / "d")
    assert CellSet.from_folder(root, groups=r"(pt\d)", size=48.0).size == 48 == CellSet.from_folder(root, groups=r"(pt\d)", size=np.int64(48)).size


def test_failed_save_keeps_the_earlier_one(tmp_path):
    cs = toy(6); p = cs.save(tmp_path / "cs")
    bad = CellSet(cs.images, cs.labels, cs.classes, cs.groups, cs.meta.assign(z=[1j] * 6))   # parquet cannot hold complex numbers
    one_line_error(lambda: bad.save(p), "cannot save the meta table")
    assert torch.equal(CellSet.load(p).images, cs.images)


def test_hidden_folders_are_not_cells(tmp_path):
    "Images inside hidden folders of a class folder (.ipynb_checkpoints, .thumbnails) are not read as cells."
    root = write_folder(tmp_path / "d")
    (root / "a" / ".thumbnails").mkdir()
    Image.fromarray(np.zeros((48, 48, 3), np.uint8)).save(root / "a" / ".thumbnails" / "pt0_9.png")
    cs = CellSet.from_folder(root, groups=r"(pt\d)")
    assert len(cs) == 8 and not any(".thumbnails" in s for s in cs.meta.source)


def test_csv_groups_from_file_names_and_split_groups(tmp_path):
    "groups= takes a CSV's groups from its paths' file names (no group column needed); group_split names each part's groups."
    write_folder(tmp_path / "d", n=20)
    rows = [dict(path=f"d/{c}/pt{i % 2}_{i}.png", label=c) for c in "ab" for i in range(20)]
    pd.DataFrame(rows).to_csv(tmp_path / "c.csv", index=False)
    cs = CellSet.from_csv(tmp_path / "c.csv", groups=r"^pt\d_(\d+)$")   # each cell index its own 'tile'
    assert list(cs.groups) == [str(i) for i in range(20)] * 2
    sp = group_split(cs, seed=0)
    g = sp.groups()
    assert sorted(sum(g.values(), [])) == sorted(set(cs.groups)) and g["test"] == sorted(set(sp.test.groups))
    assert repr(sp).startswith("Split(train: ") and "groups (" in repr(sp) and len(sp.table()) == 3
