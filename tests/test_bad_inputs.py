"""Issue 7: the catalogue of bad inputs, through the commands users run (`cellnb-study`, `cellnb-predict`) and the API.

A refused input ends with ONE line `<command>: error: <what was wrong: file / row / value>; <what to do>`, exit
status 2, no Python traceback (unless --debug), and nothing written: the --out folder keeps exactly what it held.
A problem that only shows while a run executes (non-finite loss, a weights file that is truncated or of another
architecture) fails that run with its reason, the other runs complete, and `cellnb-study` exits 1 with a summary.

Covered in other test files and not repeated here (one case each there):
- API CellSet constructors / splits: tests/test_data.py::test_bad_input (missing / empty folder, class folder without
  images, corrupt / truncated image, crops < 40 px, CSV column, unknown label, points outside their tile, NaN
  coordinates, a split or fold that empties a class, flag_limit <= 0); greyscale / RGBA / 16-bit conversions and their
  notes: tests/test_data.py::test_from_folder_groups_and_conversion.
- load_backbone: missing / truncated / other-architecture weights files: tests/test_foundation.py
  (test_missing_weights_message, test_truncated_file, test_mismatched_architecture).
- CLI: a data path that does not exist (cellnb-study), a YAML with an unknown key, --workers 0:
  tests/test_cli.py::test_bad_input_one_line_exit_2; a truncated backbone weights file named in the study YAML (the run
  fails with the reason, the other run completes, exit 1): tests/test_cli.py::test_failed_run_summary_and_exit_1; YAML types: tests/test_sweep.py::test_yaml_unknown_key_and_wrong_type.
"""
import json, os, sys, shutil, subprocess
from pathlib import Path
import numpy as np, pandas as pd, pytest, torch
from PIL import Image
from cellnb.data import CellSet
from cellnb.sweep import StudyConfig

BIN = Path(sys.executable).parent

def sh(*args, timeout=600):
    "Run a cellnb command; a leading dict is extra environment."
    env = None
    if isinstance(args[0], dict): env, args = dict(os.environ, **args[0]), args[1:]
    return subprocess.run([str(BIN/args[0]), *map(str, args[1:])], capture_output=True, text=True, timeout=timeout, env=env)

def snapshot(d:Path) -> dict:
    "Every path under `d` with its sha256, size and mtime: equal snapshots mean a byte-identical, untouched folder."
    import hashlib
    return {str(p.relative_to(d)): (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else 'dir', p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(d.rglob('*'))} if d.exists() else None

def save_png(path, a):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path)

def cell_folder(root:Path, classes=('a', 'b'), n=6, size=48, groups=None) -> Path:
    "root/<class>/<group>_<i>.png random crops (+ groups.csv when `groups` maps (class, i) -> group)."
    rng = np.random.default_rng(0)
    rows = []
    for c in classes:
        for i in range(n):
            f = root/c/f"{c}{i}.png"
            save_png(f, rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
            if groups: rows.append(dict(path=f"{c}/{c}{i}.png", group=groups(c, i)))
    if groups: pd.DataFrame(rows).to_csv(root/'groups.csv', index=False)
    return root

# ---------------------------------------------------------------- a trained model for cellnb-predict
@pytest.fixture(scope='module')
def model_dir(tmp_path_factory):
    "A scratch cnn trained for one epoch on random 48-px cells of classes a, b, c, saved as FittedModel (a run's model/)."
    from cellnb.train import fit_cell_model
    d = tmp_path_factory.mktemp('model')
    g = torch.Generator().manual_seed(0)
    cs = CellSet(torch.randint(0, 256, (36, 3, 48, 48), dtype=torch.uint8, generator=g), np.arange(36) % 3, ['a', 'b', 'c'],
                 [f"g{i % 6}" for i in range(36)])
    fm = fit_cell_model('scratch', 'cnn', cs[np.arange(24)], cs[np.arange(24, 36)], epochs=1, bs=12, device='cpu', progress=False)
    fm.save(d/'model')
    return d

# ---------------------------------------------------------------- the catalogue: refused up front, exit 2
def yaml_file(tmp, text):
    p = tmp/'study.yaml'; p.write_text(text); return p

def _study(tmp, *args): return ['cellnb-study', *args, '--quiet', '--no-report']

CASES = {  # id: (build(tmp, model_dir) -> argv, parts the one error line must contain)
    'empty_folder': (lambda t, m: _study(t, '--data', f"folder:{(t/'cells').mkdir() or t/'cells'}"), ["folder", "cells is empty", "one sub-folder per class"]),
    'class_folder_without_images': (
        lambda t, m: (cell_folder(t/'cells'), (t/'cells'/'c').mkdir(), (t/'cells'/'c'/'Thumbs.db').write_bytes(b'x'),
                      _study(t, '--data', f"folder:{t/'cells'}"))[-1], ["class folder", "cells/c has no readable images"]),
    'crops_below_40px': (lambda t, m: _study(t, '--data', f"folder:{cell_folder(t/'cells', size=32)}"), ["crop size 32 < 40", "upsample"]),
    'csv_without_group_column': (
        lambda t, m: (cell_folder(t/'cells'), pd.DataFrame(dict(path=['cells/a/a0.png'], label=['a'])).to_csv(t/'cells.csv', index=False),
                      _study(t, '--data', f"csv:{t/'cells.csv'}"))[-1], ["cells.csv has no column 'group'", "path,label,group"]),
    'split_empties_a_class': (   # class c only in one specimen: no grouped split keeps it in train, valid and test
        lambda t, m: _study(t, '--data', f"folder:{cell_folder(t/'cells', ('a', 'b', 'c'), n=10, size=40, groups=lambda c, i: 'p0' if c == 'c' else f'p{i}')}"),
        ["the split leaves class 'c' with 0 cells", "1 group(s)", "drop the class"]),
    'flag_limit_zero': (lambda t, m: _study(t, '--config', yaml_file(t, "models: [cnn]\nflag_limits: [64, 0]\n")),
                        ["study.yaml: flag_limits: 0 is not a positive number"]),
    'yaml_wrong_type': (lambda t, m: _study(t, '--config', yaml_file(t, "models: [cnn]\nlr: fast\n")),
                        ["study.yaml: lr: expected a number or null, got 'fast'"]),
    'unknown_model': (lambda t, m: _study(t, '--config', yaml_file(t, "models: [cnn, resnet50]\n")),
                      ["study.yaml: models: unknown model 'resnet50'; use one of cnn, nin, resnet", "custom_vit"]),
    'unknown_protocol': (lambda t, m: _study(t, '--config', yaml_file(t, "backbones: [effnet_lite0_in1k]\nprotocols: [probe]\n")),
                         ["protocols: unknown protocol 'probe'; use linear_probe, ft_last, full_ft"]),
    'unknown_backbone': (lambda t, m: _study(t, '--config', yaml_file(t, "models: []\nbackbones: [uni3]\n")),
                         ["backbones: unknown backbone 'uni3'; use one of resnetrs50", "effnet_lite0_in1k"]),
    'weights_file_missing': (lambda t, m: _study(t, '--config', yaml_file(t, f"backbones: [effnet_lite0_in1k]\nweights: {{effnet_lite0_in1k: {t/'nope.pth'}}}\n")),
                             ["weights: effnet_lite0_in1k: weights file", "nope.pth does not exist"]),
    'weights_key_not_a_backbone': (lambda t, m: _study(t, '--config', yaml_file(t, f"backbones: [effnet_lite0_in1k]\nweights: {{effnet_lite0: {t/'w.pth'}}}\n")),
                                   ["weights: 'effnet_lite0' is not among the backbones"]),
    'too_few_cells_to_split': (lambda t, m: _study(t, '--n-per-class', '8'), ["every class has fewer than 8 cells", "use more cells per class"]),
    'study_out_not_writable': (lambda t, m: ['cellnb-study', '--n-per-class', '24', '--out', t/'out'/'keep.txt'/'sub', '--quiet'],
                               ["cannot create the output folder", "keep.txt/sub", "choose a writable --out"]),
    'predict_data_missing': (lambda t, m: ['cellnb-predict', '--model', m, '--data', f"csv:{t/'cells.csv'}", '--out', t/'out'/'p.csv'],
                             ["cells.csv (spec 'csv:", "does not exist; fix the path"]),
    'predict_corrupt_image': (
        lambda t, m: (cell_folder(t/'cells'), (t/'cells'/'b'/'b9.png').write_bytes(b'\x89PNG\r\n\x1a\n broken'),
                      ['cellnb-predict', '--model', m, '--data', f"folder:{t/'cells'}", '--out', t/'out'/'p.csv'])[-1],
        ["cannot read image", "b/b9.png", "corrupt: re-export or remove it"]),
    'predict_unknown_label': (
        lambda t, m: (cell_folder(t/'cells'), pd.DataFrame(dict(path=['cells/a/a0.png', 'cells/b/b0.png'], label=['a', 'zebra'], group=['1', '2']))
                      .to_csv(t/'cells.csv', index=False),
                      ['cellnb-predict', '--model', m, '--data', f"csv:{t/'cells.csv'}", '--out', t/'out'/'p.csv'])[-1],
        ["row 2 (cells/b/b0.png): label 'zebra' is not a class of the model (a, b, c)"]),
    'predict_out_not_writable': (lambda t, m: ['cellnb-predict', '--model', m, '--data', f"folder:{cell_folder(t/'cells')}", '--out', t/'out'/'keep.txt'/'p.csv'],
                                 ["cannot write", "keep.txt/p.csv", "choose a writable --out"]),
    'predict_folder_is_a_file': (lambda t, m: ['cellnb-predict', '--model', m, '--data', f"folder:{cell_folder(t/'cells')/'a'/'a0.png'}", '--out', t/'out'/'p.csv'],
                                 ["a0.png') is a file, not a folder", "use folder:", "cells/a (the folder that holds it)"]),
    'predict_csv_is_a_folder': (lambda t, m: ['cellnb-predict', '--model', m, '--data', f"csv:{cell_folder(t/'cells')}", '--out', t/'out'/'p.csv'],
                                ["is a folder, not a CSV", "folder:"]),
    'predict_folder_without_crops': (lambda t, m: ((t/'new').mkdir(), (t/'new'/'.DS_Store').write_bytes(b'x'),
                                                   ['cellnb-predict', '--model', m, '--data', f"folder:{t/'new'}", '--out', t/'out'/'p.csv'])[-1],
                                     ["new holds no crops to classify"]),
    'predict_csv_without_path': (lambda t, m: (cell_folder(t/'cells'), pd.DataFrame({'Path': ['cells/a/a0.png'], 'label': ['a']}).to_csv(t/'cells.csv', index=False),
                                               ['cellnb-predict', '--model', m, '--data', f"csv:{t/'cells.csv'}", '--out', t/'out'/'p.csv'])[-1],
                                 ["cells.csv has no column 'path'", "cells to classify need path"]),
    'predict_crop_zero': (lambda t, m: ['cellnb-predict', '--model', m, '--data', f"folder:{cell_folder(t/'cells')}", '--crop', '0', '--out', t/'out'/'p.csv'],
                          ["crop size 0 < 40", "--crop 40 on the command line"]),
    'predict_damaged_params': (lambda t, m: (shutil.copytree(m/'model', t/'run'/'model'), (t/'run'/'params.json').write_text('{"crop": 48'),
                                             ['cellnb-predict', '--model', t/'run', '--data', f"folder:{cell_folder(t/'cells')}", '--out', t/'out'/'p.csv'])[-1],
                               ["run/params.json is damaged", "rerun its study"]),
    # issue 50: values that would fail in every run, odd files, inputs that were accepted and should not be, wording
    'seed_negative': (lambda t, m: _study(t, '--config', yaml_file(t, "models: [cnn]\nseeds: [-1]\n")), ["study.yaml: seeds: -1 is not a seed; use an integer from 0"]),
    'blur_sigma_nan': (lambda t, m: _study(t, '--config', yaml_file(t, "models: [cnn]\nblur_sigmas: [.nan]\n")), ["study.yaml: blur_sigmas: nan is not a finite number"]),
    'lr_nan': (lambda t, m: _study(t, '--config', yaml_file(t, "models: [cnn]\nlr: .nan\n")), ["study.yaml: lr: nan is not a finite number"]),
    'split_seed_out_of_range': (lambda t, m: _study(t, '--config', yaml_file(t, "models: [cnn]\nsplit_seed: 5000000000\n")), ["split_seed: 5000000000 is not a seed"]),
    'one_class_csv': (
        lambda t, m: (cell_folder(t/'cells', n=12), pd.DataFrame(dict(path=[f"cells/a/a{i}.png" for i in range(12)], label='a', group=[f"p{i}" for i in range(12)]))
                      .to_csv(t/'cells.csv', index=False), _study(t, '--data', f"csv:{t/'cells.csv'}"))[-1],
        ["cells.csv: every cell is of class 'a'", "at least 2 classes"]),
    'config_not_utf8': (lambda t, m: ((t/'study.yaml').write_bytes(b"models: [cnn]\nname: caf\xe9 study\n"), _study(t, '--config', t/'study.yaml'))[-1],
                        ["study.yaml is not UTF-8 text (byte 0xe9", "save the study config as a UTF-8 YAML file"]),
    'config_is_a_folder': (lambda t, m: _study(t, '--config', t), ["is a folder; pass the path of a YAML file"]),
    'image_over_pixel_limit': (lambda t, m: [{'CELLNB_MAX_IMAGE_PIXELS': '500'}, *_study(t, '--data', f"folder:{cell_folder(t/'cells')}")],
                               ["has 2304 pixels, over Pillow's safety limit of 1000", "CELLNB_MAX_IMAGE_PIXELS"]),
    'crop_under_40_among_larger': (lambda t, m: (cell_folder(t/'cells'), save_png(t/'cells'/'a'/'small.png', np.zeros((32, 32, 3), np.uint8)),
                                                 _study(t, '--data', f"folder:{t/'cells'}"))[-1], ["crop a/small.png is 32x32 px, under 40 px", "--crop 48"]),
    'csv_label_nan': (lambda t, m: (cell_folder(t/'cells'), pd.DataFrame(dict(path=['cells/a/a0.png', 'cells/b/b0.png'], label=['a', 'NaN'], group=['1', '2']))
                                    .to_csv(t/'cells.csv', index=False), _study(t, '--data', f"csv:{t/'cells.csv'}"))[-1],
                      ["cells.csv row 2: label 'NaN' reads as a missing value"]),
    'csv_duplicate_rows': (lambda t, m: (cell_folder(t/'cells'), pd.DataFrame(dict(path=['cells/a/a0.png', 'cells/b/b0.png', 'cells/a/a0.png'], label=['a', 'b', 'a'],
                                         group=['1', '2', '1'])).to_csv(t/'cells.csv', index=False), _study(t, '--data', f"csv:{t/'cells.csv'}"))[-1],
                           ["cells.csv rows 1 and 3 list the same crop cells/a/a0.png"]),
    'epochs_policy_typo': (lambda t, m: _study(t, '--config', yaml_file(t, "models: [cnn]\nepochs: {cnnn: 3}\n")), ["study.yaml: epochs: 'cnnn' names no run of this study"]),
    'option_blamed_not_the_yaml': (lambda t, m: _study(t, '--config', yaml_file(t, "models: [cnn]\n"), '--workers', '0'), ["cellnb-study: error: --workers: 0 must be >= 1"]),
    'groups_pattern_matches_no_file': (lambda t, m: _study(t, '--data', f"folder:{cell_folder(t/'cells')}", '--groups', r'^(.+)_\d+$'),
                                       [r"groups pattern '^(.+)_\\d+$' does not match file name 'a0'"]),
    'groups_for_synthetic_data': (lambda t, m: _study(t, '--groups', r'^(.+)_\d+$'), ["cellnb-study: error: --groups: applies to folder: and csv: data"]),
    'predict_out_is_a_folder': (lambda t, m: ['cellnb-predict', '--model', m, '--data', f"folder:{cell_folder(t/'cells')}", '--out', t/'out'],
                                ["--out", "is a folder; give the CSV file to write"]),
    'report_of_a_file': (lambda t, m: ['cellnb-report', t/'out'/'keep.txt'], ["keep.txt is not a folder"]),
    'predict_weights_for_scratch': (lambda t, m: ['cellnb-predict', '--model', m, '--data', f"folder:{cell_folder(t/'cells')}", '--weights', t/'w.pth', '--out', t/'out'/'p.csv'],
                                    ["--weights is for linear_probe and lora runs", "drop --weights"]),
}

@pytest.fixture(scope='module')
def refused(tmp_path_factory, model_dir):
    "Run every case (two commands at a time: each is mostly interpreter start-up) -> {case: (argv, out, before, result)}."
    from concurrent.futures import ThreadPoolExecutor
    from cellnb.sweep import run_study
    from test_sweep import toy_notebook
    finished = tmp_path_factory.mktemp('finished')/'study'   # the --out folder already holds a finished study: a refused command must not touch it
    run_study(StudyConfig.tiny(seeds=[0, 1]), finished, notebook=toy_notebook(finished.parent/'toy.ipynb'), progress=False)
    (finished/'keep.txt').write_text("previous results\n")
    def one(case):
        t = tmp_path_factory.mktemp(case)
        out = t/'out'
        shutil.copytree(finished, out)
        argv = CASES[case][0](t, model_dir)
        cmd = argv[1] if isinstance(argv[0], dict) else argv[0]
        if cmd == 'cellnb-study' and '--out' not in argv: argv += ['--out', out]
        before = snapshot(out)
        return case, (argv, out, before, sh(*argv))
    with ThreadPoolExecutor(2) as ex: return dict(ex.map(one, CASES))

@pytest.mark.parametrize('case', list(CASES))
def test_refused_with_one_line(case, refused):
    argv, out, before, r = refused[case]
    cmd = argv[1] if isinstance(argv[0], dict) else argv[0]
    assert r.returncode == 2, r.stdout + r.stderr
    *warned, last = r.stderr.strip().splitlines()   # cellnb-predict may warn first (e.g. a data conversion), on its own line
    assert last.startswith(f"{cmd}: error: ") and all(w.startswith(f"{cmd}: warning: ") for w in warned), r.stderr
    if cmd == 'cellnb-study': assert not warned, r.stderr   # a refused study prints its one error line only (no 'no groups given' first)
    for p in CASES[case][1]: assert p in last, (p, last)
    assert 'Traceback' not in r.stderr + r.stdout
    assert snapshot(out) == before          # nothing written, nothing half-written (no .lock, tmp files, study.yaml)

def test_debug_shows_the_traceback(tmp_path):
    (tmp_path/'cells').mkdir()
    r = sh('cellnb-study', '--data', f"folder:{tmp_path/'cells'}", '--out', tmp_path/'out', '--debug')
    assert r.returncode != 0 and 'Traceback (most recent call last)' in r.stderr and 'CellnbError' in r.stderr
    assert not (tmp_path/'out').exists()

# ---------------------------------------------------------------- converted, not refused
def test_predict_converts_grey_rgba_16bit(tmp_path, model_dir):
    "Greyscale, RGBA and 16-bit crops are converted (the CSV's note says how); a folder with a subset of the classes is fine."
    rng = np.random.default_rng(1)
    root = tmp_path/'cells'
    save_png(root/'a'/'rgb.png', rng.integers(0, 256, (48, 48, 3), dtype=np.uint8))
    save_png(root/'a'/'grey.png', rng.integers(0, 256, (48, 48), dtype=np.uint8))
    save_png(root/'b'/'rgba.png', rng.integers(0, 256, (48, 48, 4), dtype=np.uint8))
    Image.fromarray(rng.integers(0, 65535, (48, 48), dtype=np.uint16)).save(root/'b'/'deep.tif')
    r = sh('cellnb-predict', '--model', model_dir, '--data', f"folder:{root}", '--out', tmp_path/'p.csv')
    assert r.returncode == 0, r.stderr
    assert 'Traceback' not in r.stderr
    p = pd.read_csv(tmp_path/'p.csv', keep_default_na=False).set_index('source')
    assert p.loc['a/grey.png', 'note'] == 'grey->RGB' and p.loc['b/rgba.png', 'note'] == 'RGBA->RGB'
    assert '16-bit->8-bit' in p.loc['b/deep.tif', 'note'] and p.loc['a/rgb.png', 'note'] == ''
    assert list(p.true) == ['a', 'a', 'b', 'b'] and set(p.pred) <= {'a', 'b', 'c'}
    assert np.allclose(p[['prob_a', 'prob_b', 'prob_c']].sum(axis=1), 1, atol=1e-4)

def test_predict_unlabelled_cells(tmp_path, model_dir):
    "New cells without labels: a folder of crops with no class sub-folders, or a CSV with a path column and no label column."
    rng = np.random.default_rng(2)
    flat = tmp_path/'new'
    for i in range(5): save_png(flat/f"n{i}.png", rng.integers(0, 256, (48, 48, 3), dtype=np.uint8))
    save_png(flat/'grey.png', rng.integers(0, 256, (48, 48), dtype=np.uint8))
    (flat/'Thumbs.db').write_bytes(b'x')   # ignored, as in a class folder
    r = sh('cellnb-predict', '--model', model_dir, '--data', f"folder:{flat}", '--out', tmp_path/'f.csv')
    assert r.returncode == 0, r.stderr
    assert "6 cells classified" in r.stdout and "accuracy" not in r.stdout
    f = pd.read_csv(tmp_path/'f.csv', keep_default_na=False)
    assert 'true' not in f and sorted(f.source) == sorted([f"n{i}.png" for i in range(5)] + ['grey.png'])
    assert f.set_index('source').loc['grey.png', 'note'] == 'grey->RGB' and set(f.pred) <= {'a', 'b', 'c'}
    assert np.allclose(f[['prob_a', 'prob_b', 'prob_c']].sum(axis=1), 1, atol=1e-4)
    # a CSV of paths (relative to the CSV, with an optional group) gives the same probabilities for the same crops
    pd.DataFrame(dict(path=[f"new/n{i}.png" for i in range(5)], group=['p1'] * 5)).to_csv(tmp_path/'new.csv', index=False)
    r = sh('cellnb-predict', '--model', model_dir, '--data', f"csv:{tmp_path/'new.csv'}", '--out', tmp_path/'c.csv')
    assert r.returncode == 0, r.stderr
    c = pd.read_csv(tmp_path/'c.csv')
    assert 'true' not in c and list(c.group) == ['p1'] * 5
    both = f.assign(source='new/' + f.source).merge(c, on='source')
    assert len(both) == 5 and np.allclose(both.prob_a_x, both.prob_a_y, atol=1e-5)
    # a path that is not there: one line naming the row, and no CSV written
    pd.DataFrame(dict(path=['new/n0.png', 'new/gone.png'])).to_csv(tmp_path/'bad.csv', index=False)
    r = sh('cellnb-predict', '--model', model_dir, '--data', f"csv:{tmp_path/'bad.csv'}", '--out', tmp_path/'b.csv')
    assert r.returncode == 2 and 'Traceback' not in r.stderr
    assert "bad.csv row 2: image" in r.stderr and "gone.png does not exist" in r.stderr and not (tmp_path/'b.csv').exists()

def test_predict_labelled_csv_without_groups(tmp_path, model_dir):
    "Prediction needs no groups: a path,label CSV is read (labels compared), with no warning about groups."
    cell_folder(tmp_path/'cells')
    pd.DataFrame(dict(path=['cells/a/a0.png', 'cells/b/b1.png'], label=['a', 'b'])).to_csv(tmp_path/'pl.csv', index=False)
    r = sh('cellnb-predict', '--model', model_dir, '--data', f"csv:{tmp_path/'pl.csv'}", '--out', tmp_path/'p.csv')
    assert r.returncode == 0, r.stderr
    assert "2 cells classified" in r.stdout and "accuracy against the data's labels" in r.stdout and 'groups' not in r.stderr
    assert list(pd.read_csv(tmp_path/'p.csv').true) == ['a', 'b']
    r = sh('cellnb-predict', '--model', model_dir, '--data', f"folder:{tmp_path/'cells'}", '--out', tmp_path/'f.csv')
    assert r.returncode == 0 and 'no groups given' not in r.stderr, r.stderr   # a labelled folder without groups.csv likewise

def test_probe_run_moved_to_another_machine(tmp_path):
    "A linear-probe run records its backbone weights path; where that path is gone, --weights names the file (else the offline one, with a warning)."
    from cellnb.train import fit_cell_model
    from cellnb.foundation import BACKBONES
    g = torch.Generator().manual_seed(0)
    cs = CellSet(torch.randint(0, 256, (24, 3, 48, 48), dtype=torch.uint8, generator=g), np.arange(24) % 2, ['a', 'b'], [f"g{i % 6}" for i in range(24)])
    fm = fit_cell_model('linear_probe', 'effnet_lite0_in1k', cs[np.arange(16)], cs[np.arange(16, 24)], device='cpu', progress=False, cache=False)
    fm.save(tmp_path/'run'/'model')
    cfg = json.loads((tmp_path/'run'/'model'/'config.json').read_text())
    cfg['weights'] = '/data/old_machine/weights/lite0.pth'
    (tmp_path/'run'/'model'/'config.json').write_text(json.dumps(cfg))
    cell_folder(tmp_path/'cells')
    args = ['cellnb-predict', '--model', tmp_path/'run', '--data', f"folder:{tmp_path/'cells'}"]
    r = sh(*args, '--weights', BACKBONES['effnet_lite0_in1k'].packaged(), '--out', tmp_path/'w.csv')
    assert r.returncode == 0 and 'not here' not in r.stderr, r.stderr
    r = sh(*args, '--out', tmp_path/'o.csv')
    assert r.returncode == 0, r.stderr
    assert "lite0.pth) are not here; using effnet_lite0_in1k's weights found offline" in r.stderr and "--weights FILE" in r.stderr
    w, o = pd.read_csv(tmp_path/'w.csv'), pd.read_csv(tmp_path/'o.csv')
    assert len(w) == 12 and np.allclose(w.filter(like='prob_'), o.filter(like='prob_'), atol=1e-5)   # the same (packaged) file
    r = sh(*args, '--weights', tmp_path/'gone.pth', '--out', tmp_path/'g.csv')
    assert r.returncode == 2 and "--weights" in r.stderr and "gone.pth does not exist" in r.stderr and not (tmp_path/'g.csv').exists()

# ---------------------------------------------------------------- problems found while a run executes
@pytest.fixture(scope='module')
def runtime_study(tmp_path_factory):
    """One study through the CLI whose runs meet problems a YAML cannot show: a non-finite loss (lr 1e6 for the scratch
    cnn) and a weights file of another architecture; the third run (a timm backbone with a good local file) completes, at
    a FlagLimit larger than any class (allowed: it takes all cells, recorded). A truncated weights file is the failing
    run of tests/test_cli.py's study."""
    import timm
    from cellnb.foundation import BACKBONES
    d = tmp_path_factory.mktemp('runtime')
    good = BACKBONES['effnet_lite0_in1k'].packaged()
    from safetensors.torch import save_file
    save_file(timm.create_model('test_efficientnet', num_classes=0).state_dict(), str(d/'tiny.safetensors'))
    cfg = StudyConfig.tiny(models=['cnn'], lr=1e6, epochs={'cnn': 4, 'default': 1}, flag_limits=[1000], protocols=['linear_probe'],
                           backbones=['resnetrs50', 'timm:test_efficientnet'],
                           weights={'resnetrs50': str(good),
                                    'timm:test_efficientnet': str(d/'tiny.safetensors')})
    cfg.to_yaml(d/'study.yaml')
    r = sh('cellnb-study', '--config', d/'study.yaml', '--out', d/'study', '--quiet', '--no-report')
    df = pd.read_parquet(d/'study'/'results.parquet')
    return r, df.groupby('model').first(), d/'study'

def test_runtime_failures_are_runs_not_crashes(runtime_study):
    r, by_model, _ = runtime_study
    assert r.returncode == 1, r.stdout + r.stderr
    first = r.stdout.splitlines()[0]   # the ok run may also be flagged (a probe on random-looking cells)
    assert first.startswith("1 of 3 runs ok, ") and ", 2 failed (" in first and 'Traceback' not in r.stdout + r.stderr
    assert by_model.loc['timm:test_efficientnet', 'status'] == 'ok'

@pytest.mark.parametrize('model, parts', [
    ('cnn', ["training diverged: loss is", "lower lr (was 1000000.0)"]),                       # non-finite loss
    ('resnetrs50', ["do not fit backbone 'resnetrs50'", "missing", "unexpected"]),               # another architecture
])
def test_runtime_failure_recorded(runtime_study, model, parts):
    r, by_model, study = runtime_study
    row = by_model.loc[model]
    assert row.status == 'failed'
    for p in parts: assert p in row.error, (p, row.error)
    assert f"failed {row.run_id} {model}/" in r.stdout and parts[0] in r.stdout
    assert (study/'runs'/row.run_id/'error.txt').read_text().strip()

def test_flag_limit_above_every_class_takes_all(runtime_study):
    _, by_model, study = runtime_study
    row = by_model.loc['timm:test_efficientnet']
    counts = json.loads(row.n_train_counts)
    assert row.flag_limit == 1000 and row.n_train_per_class == min(counts.values()) < 1000
    from cellnb.datasets import load_dataset
    from cellnb.data import group_split
    train = group_split(load_dataset('synthetic', n_per_class=24), seed=0)[0]
    assert counts == {k: int(v) for k, v in train.class_counts().items()}   # every training cell of every class
