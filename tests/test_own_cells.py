"""A user's own cells through `cellnb-study` with the default training policy (issue 48): a two-class folder of real
CRCHisto crops, one positive class of 80 cells against 510, named `<tile>_<n>.png`, grouped by tile from the command line."""
import re, sys, subprocess
from pathlib import Path
import numpy as np, pandas as pd, pytest, yaml
from PIL import Image
from cellnb.core import require_crchisto

BIN = Path(sys.executable).parent
GROUPS = r'^(img\d+)_\d+$'

def sh(*args, timeout=1200):
    return subprocess.run([str(BIN/args[0]), *map(str, args[1:])], capture_output=True, text=True, timeout=timeout)

@pytest.fixture(scope='module')
def cells_folder(tmp_path_factory):
    "80 'inflammatory' and 510 'epithelial' 48-px crops from CRCHisto's images, written as <image>_<n>.png per class folder."
    require_crchisto()
    from cellnb.datasets import load_crchisto
    cs = load_crchisto(crop=48)
    y, g = cs.labels.numpy(), np.asarray(cs.groups).astype(str)
    root = tmp_path_factory.mktemp('own')/'cells'
    rng = np.random.default_rng(0)
    for name, k in (('inflammatory', 80), ('epithelial', 510)):
        idx = np.sort(rng.choice(np.flatnonzero(y == cs.classes.index(name)), k, replace=False))
        (root/name).mkdir(parents=True)
        for i in idx:
            tile = re.sub(r'\W', '', g[i])
            Image.fromarray(cs.images[i].permute(1, 2, 0).numpy()).save(root/name/f"{tile}_{i}.png")
    return root

def _study(folder, out, **cfg):
    base = dict(models=['cnn'], flag_limits=[64], seeds=[0], blur_sigmas=[1.6], batch_size=16, n_boot=50, workers=1)
    (out.parent/f'{out.name}.yaml').write_text(yaml.safe_dump({**base, **cfg}))
    return sh('cellnb-study', '--config', out.parent/f'{out.name}.yaml', '--data', f'folder:{folder}', '--groups', GROUPS,
              '--out', out, '--quiet', '--no-report')

def test_defaults_train_with_tile_groups_and_a_starved_run_is_flagged(cells_folder, tmp_path):
    from cellnb.data import CellSet, group_split
    r = _study(cells_folder, tmp_path/'study')   # no epochs / min_steps: the training policy
    assert r.returncode == 0, r.stderr[-2000:]
    first = r.stdout.strip().splitlines()[0]
    assert first.startswith('1 of 1 runs ok, 0 failed'), first
    res = pd.read_parquet(tmp_path/'study'/'results.parquet')
    clean = res[res.condition == 'clean'].iloc[0]
    assert (clean.warning or '') == '' and clean.steps >= 500 and clean.macro_f1 > 0.7, clean.to_dict()
    run = tmp_path/'study'/'runs'/clean.run_id
    preds = pd.read_parquet(run/'predictions.parquet')
    assert preds.loc[preds.condition == 'clean', 'pred'].nunique() == 2   # not one class
    # the tiles never straddle the split: the test cells' tiles hold no training or validation cell
    cs = CellSet.from_folder(cells_folder, groups=GROUPS)
    assert len(set(cs.groups)) > 20 and all(re.fullmatch(r'img\d+', t) for t in set(cs.groups))
    tr, va, te = group_split(cs, seed=0)
    assert not (set(tr.groups) | set(va.groups)) & set(te.groups)
    assert set(preds['group']) <= set(te.groups)
    # one epoch of a tiny FlagLimit: the run is flagged in the summary line
    r = _study(cells_folder, tmp_path/'starved', epochs=1, flag_limits=[8])
    assert r.returncode == 0, r.stderr[-2000:]
    first = r.stdout.strip().splitlines()[0]
    assert first.startswith('1 of 1 runs ok, 1 flagged (see report): cnn FlagLimit 8 seed 0: '), first
