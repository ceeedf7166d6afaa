"Tests of the default training policy (cellnb.train.TRAIN_POLICY): step floor met by passes, what a run records, and runs that did not learn flagged."
import numpy as np
import pandas as pd
import pytest
import yaml
from pathlib import Path
from cellnb.core import CellnbError, require_crchisto
from cellnb.train import (TRAIN_POLICY, fit_cell_model, train_schedule, resolve_policy, learning_warning, majority_macro_f1,
                          cell_dataloaders, FittedModel)
from sklearn.metrics import f1_score
from test_train import easy_cells

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(model_kwargs=dict(dims=(8, 16, 16, 16)))

def test_policy_resolution():
    assert resolve_policy() == (TRAIN_POLICY['epochs'], TRAIN_POLICY['min_steps'])
    assert resolve_policy(5) == (5, 0)             # epochs asked for alone: exactly those, no floor
    assert resolve_policy(5, 40) == (5, 40)
    assert resolve_policy(None, 100) == (TRAIN_POLICY['epochs'], 100)

@pytest.mark.parametrize('n', [8, 33, 64, 256, 1000, 3000, 20000])
@pytest.mark.parametrize('bs', [16, 64])
def test_schedule_meets_the_floor_with_few_validations(n, bs):
    "Whatever the training set, a default run takes >= min_steps steps, at most `epochs` validations, and whole passes."
    epochs, spe = train_schedule(n, bs)
    per_pass = train_schedule(n, bs, 1)[1]
    assert epochs * spe >= TRAIN_POLICY['min_steps']
    assert 1 <= epochs <= TRAIN_POLICY['epochs'] and spe % per_pass == 0
    if TRAIN_POLICY['epochs'] * per_pass >= TRAIN_POLICY['min_steps']: assert (epochs, spe) == (TRAIN_POLICY['epochs'], per_pass)
    else: assert spe >= TRAIN_POLICY['epoch_steps'] or epochs == 1

def test_passes_cover_every_cell_once_per_pass():
    cs = easy_cells(5)   # 20 cells, bs 8: 3 batches a pass (the last of 4 cells)
    dl = cell_dataloaders(cs, cs[:4], bs=8, device='cpu', passes=3, augment=False).train
    assert len(dl) == 9
    labels = [yb for _, yb in dl]
    for p in range(3):
        assert sorted(np.concatenate([y.numpy() for y in labels[3*p:3*p+3]]).tolist()) == sorted(cs.labels.numpy().tolist())
    assert dl.new(shuffle=False).passes == 1   # predicting through a copy sees each cell once

def test_default_fit_records_the_policy_and_learns():
    cs = easy_cells(12)
    idx = np.arange(len(cs))
    tr, va = cs[idx[idx % 3 != 0]], cs[idx[idx % 3 == 0]]
    fm = fit_cell_model('scratch', 'cnn', tr, va, min_steps=60, device='cpu', progress=False, seed=0, **TINY)
    epochs, spe = train_schedule(len(tr), TRAIN_POLICY['bs'], None, 60)
    assert fm.config['epochs'] == epochs == len(fm.history) and fm.config['steps'] == epochs * spe >= 60
    assert fm.config['min_steps'] == 60 and fm.config['bs'] == TRAIN_POLICY['bs']
    assert learning_warning(fm, va, fm.predict(va)) == ''
    fm5 = fit_cell_model('scratch', 'cnn', tr, va, epochs=2, device='cpu', progress=False, seed=0, **TINY)
    assert fm5.config['epochs'] == 2 and fm5.config['min_steps'] == 0 and fm5.config['steps'] == 2 * train_schedule(len(tr), 64, 1)[1]

def test_bad_policy_values_are_one_line():
    cs = easy_cells(6)
    for kw, msg in [(dict(min_steps=-1), "min_steps=-1 is invalid"), (dict(min_steps=2.5), "min_steps=2.5 is invalid"),
                    (dict(epochs=0), "epochs=0 is invalid"), (dict(epochs=True), "epochs=True is invalid")]:
        with pytest.raises(CellnbError, match=msg) as e: fit_cell_model('scratch', 'cnn', cs, cs, device='cpu', **kw)
        assert '\n' not in str(e.value)

def test_majority_macro_f1_is_sklearns_score_of_the_constant_prediction():
    g = np.random.default_rng(0)
    for k in (2, 3, 4):
        y = g.integers(0, k, 200); y[:50] = 0
        best = max(f1_score(y, np.full_like(y, c), average='macro', labels=list(range(k)), zero_division=0) for c in range(k))
        assert majority_macro_f1(y, k) == pytest.approx(best)

def _fitted(history, classes=('a', 'b', 'c')):
    return FittedModel('scratch', 'cnn', list(classes), 48, history=pd.DataFrame(history), config={})

def test_learning_warning_says_what_went_wrong():
    va = easy_cells(8, n_classes=3)        # balanced: the majority baseline is 2(1/3)/(4/3)/3 = 1/6
    base = majority_macro_f1(va.labels.numpy(), 3)
    ok = _fitted(dict(epoch=[0, 1], macro_f1=[0.10, base + 0.05]))
    assert learning_warning(ok, va, ['a', 'b', 'a']) == ''
    flat = _fitted(dict(epoch=[0, 1], macro_f1=[0.10, base]))
    w = learning_warning(flat, va)
    assert w.startswith('not learned: best validation macro-F1 0.167') and 'most common class (0.167)' in w
    w = learning_warning(ok, va, ['b'] * 30)
    assert w == "collapsed: all 30 test cells predicted as 'b'"
    both = learning_warning(flat, va, ['b'] * 30)
    assert both.startswith('not learned') and 'collapsed: all 30' in both and '\n' not in both   # both, in one line
    probe = _fitted(dict(C=[0.1, 1.0], valid_macro_f1=[0.05, 0.1]))    # the probe's history names its column so
    assert learning_warning(probe, va).startswith('not learned')

def test_a_starved_run_is_flagged():
    "One epoch of a tiny network on an imbalanced set (9 of 10 cells in one class): it predicts the majority class."
    cs = easy_cells(40, n_classes=2)
    y = cs.labels.numpy()
    keep = np.flatnonzero((y == 0) | (np.cumsum(y == 1) <= 4))
    tr = cs[keep]
    fm = fit_cell_model('scratch', 'cnn', tr, tr, epochs=1, lr=1e-6, device='cpu', progress=False, seed=0, **TINY)
    pred = fm.predict(cs)
    w = learning_warning(fm, tr, pred)
    assert w.startswith('not learned') or w.startswith('collapsed'), w

def test_defaults_are_the_cv_configuration_behind_the_weighted_f1_target():
    """On every cell the default policy is the 30-epoch CNN entry of the CRCHisto CV (batch 64, the protocol's lr, default
    augmentation; the step floor does not bind on either fold's training part): a default fit is that run."""
    require_crchisto()
    from cellnb.datasets import load_crchisto
    from cellnb.data import group_split
    cfg = yaml.safe_load((ROOT / 'benchmarks' / 'crchisto_study' / 'crchisto_cv.yaml').read_text())
    entry = next(m for m in cfg['models'] if m.get('key') == 'cnn/scratch/30ep')
    assert entry['epochs'] == TRAIN_POLICY['epochs'] and cfg['batch_size'] == TRAIN_POLICY['bs']
    assert not {'lr', 'augment', 'label_smoothing', 'model_kwargs'} & set(entry) and entry.get('flag_limit') is None
    # both CV folds hold about half of CRCHisto's 22,444 cells for training; the smaller is what bounds the floor
    cs = load_crchisto(crop=cfg['crop'])
    train, valid, test = group_split(cs, seed=0)
    for n in (len(train) // 2, len(train)):
        assert train_schedule(n) == (TRAIN_POLICY['epochs'], train_schedule(n, TRAIN_POLICY['bs'], 1)[1])

def test_family_names_pathology_foundation_models_only():
    from cellnb.train import family_of
    assert family_of('cnn', 'scratch') == 'scratch'
    assert family_of('uni', 'linear_probe') == family_of('ctranspath', 'full_ft') == family_of('uni2_h', 'ft_last') == 'foundation'
    assert family_of('effnet_lite0_in1k', 'linear_probe') == family_of('resnetrs50', 'ft_last') == 'pretrained'
    assert family_of('timm:resnet18', 'linear_probe') == family_of('my_own_backbone', 'linear_probe') == 'pretrained'

def test_old_tables_name_imagenet_backbones_pretrained():
    "A results table written when every backbone was 'foundation' reads with the family each backbone has."
    from cellnb.figures import check_results
    rows = pd.DataFrame(dict(run_id=['a', 'b', 'c'], model=['cnn', 'effnet_lite0_in1k', 'uni'], family=['scratch', 'foundation', 'foundation'],
                             protocol=['scratch', 'linear_probe', 'linear_probe'], flag_limit=64, seed=0, condition='clean', sigma=0.0,
                             sigma_40px=0.0, macro_f1=0.5, status='ok'))
    assert check_results(rows)['family'].tolist() == ['scratch', 'pretrained', 'foundation']
