"Tests for cellnb.evaluate: metrics vs sklearn, bootstrap CIs, paired comparison, result rows, bad input."
import math, time
import numpy as np, pandas as pd, pytest, torch
from sklearn.metrics import accuracy_score, f1_score, balanced_accuracy_score, precision_recall_fscore_support
from cellnb.core import CellnbError
from cellnb.data import CellSet
from cellnb.evaluate import (RESULT_COLUMNS, result_row, row_from_metrics, metrics_from_preds, evaluate, paired_compare,
                             expected_calibration_error, per_class_metrics, PER_CLASS_SCORES, _boot_confusions, _per_class_scores)

CLASSES = ['a', 'b', 'c', 'd']

def cells(n=200, seed=0, n_groups=20):
    "A tiny CellSet (40-px, 4 classes) with groups."
    g = torch.Generator().manual_seed(seed)
    img = torch.randint(0, 256, (n, 3, 40, 40), generator=g, dtype=torch.uint8)
    return CellSet(img, np.arange(n) % 4, CLASSES, groups=[f"s{i % n_groups}" for i in range(n)])

class Fake:
    "Duck-typed fitted model: right with probability acc - drop*sigma (fixed per cell), else the next class."
    classes, protocol, family, train_seconds = CLASSES, 'scratch', 'scratch', 1.5
    def __init__(self, acc=0.8, drop=0.0, seed=0, name='fake'): self.acc, self.drop, self.seed, self.model_name = acc, drop, seed, name
    def predict_proba(self, cellset, condition='clean', sigma=0.0, bs=256):
        y = cellset.labels.numpy()
        u = np.random.default_rng(self.seed).random(len(cellset.root))[cellset.root_idx]
        ok = u < max(self.acc - self.drop * sigma, 0)
        pred = np.where(ok, y, (y + 1) % 4)
        p = np.full((len(y), 4), 0.1); p[np.arange(len(y)), pred] = 0.7
        return p

def test_result_row_schema():
    r = result_row(model='cnn', sigma=np.float32(0.5), status='ok')
    assert list(r) == RESULT_COLUMNS and r['sigma'] == 0.5 and type(r['sigma']) is float
    assert math.isnan(r['accuracy']) and r['run_id'] is None and r['error'] is None and r['warning'] is None
    assert result_row(warning="collapsed: every test cell predicted as 'a'")['warning'].startswith("collapsed")
    with pytest.raises(CellnbError, match="macro_f"):
        result_row(macro_f=0.3)

def test_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    t = rng.integers(0, 4, 300); p = np.where(rng.random(300) < .7, t, rng.integers(0, 4, 300))
    df = pd.DataFrame(dict(true=np.array(CLASSES)[t], pred=np.array(CLASSES)[p]))
    m = metrics_from_preds(df, CLASSES, n_boot=0)
    assert m['accuracy'] == pytest.approx(accuracy_score(t, p))
    assert m['macro_f1'] == pytest.approx(f1_score(t, p, average='macro'))
    assert m['weighted_f1'] == pytest.approx(f1_score(t, p, average='weighted'))
    assert m['balanced_accuracy'] == pytest.approx(balanced_accuracy_score(t, p))
    pr, rc, f1, sup = precision_recall_fscore_support(t, p)
    for i, c in enumerate(CLASSES):
        assert m['per_class'][c]['precision'] == pytest.approx(pr[i]) and m['per_class'][c]['f1'] == pytest.approx(f1[i])
        assert m['per_class'][c]['support'] == sup[i]
    assert np.array(m['confusion']).sum() == 300 and np.trace(np.array(m['confusion'])) == (t == p).sum()
    assert math.isnan(m['ece']) and math.isnan(m['accuracy_ci_low'])   # no probs, no bootstrap

def test_integer_labels_and_missing_class():
    # class 'd' never occurs: macro-F1 averages over the classes seen (sklearn's default), not a zero for 'd'
    df = pd.DataFrame(dict(true=[0, 0, 1, 2], pred=[0, 1, 1, 2]))
    m = metrics_from_preds(df, CLASSES, n_boot=50)
    assert m['macro_f1'] == pytest.approx(f1_score(df.true, df.pred, average='macro'))
    assert m['per_class']['d']['support'] == 0

def test_ci_contains_point_and_is_deterministic():
    _, m1 = evaluate(Fake(), cells(400), n_boot=500, seed=7)
    _, m2 = evaluate(Fake(), cells(400), n_boot=500, seed=7)
    _, m3 = evaluate(Fake(), cells(400), n_boot=500, seed=8)
    for k in ('accuracy', 'macro_f1'):
        assert m1[f'{k}_ci_low'] <= m1[k] <= m1[f'{k}_ci_high']
        assert m1[f'{k}_ci_high'] - m1[f'{k}_ci_low'] > 0.02
    assert (m1['macro_f1_ci_low'], m1['macro_f1_ci_high']) == (m2['macro_f1_ci_low'], m2['macro_f1_ci_high'])
    assert (m1['macro_f1_ci_low'], m1['macro_f1_ci_high']) != (m3['macro_f1_ci_low'], m3['macro_f1_ci_high'])

def test_bootstrap_matches_naive_resampling():
    "Vectorised CIs agree with sklearn scored on explicit resamples (same distribution, not same draws)."
    rng = np.random.default_rng(1)
    t = rng.integers(0, 4, 500); p = np.where(rng.random(500) < .75, t, rng.integers(0, 4, 500))
    df = pd.DataFrame(dict(true=t, pred=p))
    m = metrics_from_preds(df, CLASSES, n_boot=4000, seed=0)
    idx = np.random.default_rng(5).integers(0, 500, (400, 500))
    naive = np.array([f1_score(t[i], p[i], average='macro') for i in idx])
    assert m['macro_f1_ci_low'] == pytest.approx(np.quantile(naive, .025), abs=0.012)
    assert m['macro_f1_ci_high'] == pytest.approx(np.quantile(naive, .975), abs=0.012)

def test_bootstrap_speed():
    rng = np.random.default_rng(0)
    t = rng.integers(0, 4, 5000); p = np.where(rng.random(5000) < .8, t, rng.integers(0, 4, 5000))
    df = pd.DataFrame(dict(true=t, pred=p, group=(np.arange(5000) % 50).astype(str)))
    t0 = time.perf_counter(); metrics_from_preds(df, CLASSES, n_boot=1000); dt = time.perf_counter() - t0
    t0 = time.perf_counter(); metrics_from_preds(df, CLASSES, n_boot=1000, group_bootstrap=True); dg = time.perf_counter() - t0
    print(f"1000 resamples of 5000 cells: cell {dt*1000:.0f} ms, group {dg*1000:.0f} ms")
    assert dt < 1.5 and dg < 1.5   # ~0.2 s here; generous for loaded CI machines

def test_group_bootstrap_wider_for_clustered_errors():
    rng = np.random.default_rng(0)
    g = np.repeat(np.arange(30), 40); q = rng.random(30)
    t = rng.integers(0, 4, len(g)); p = np.where(rng.random(len(g)) < q[g], t, (t + 1) % 4)
    df = pd.DataFrame(dict(true=t, pred=p, group=g))
    mc = metrics_from_preds(df, CLASSES, seed=0); mg = metrics_from_preds(df, CLASSES, seed=0, group_bootstrap=True)
    for k in ('accuracy', 'macro_f1'):
        assert mg[f'{k}_ci_high'] - mg[f'{k}_ci_low'] > 2 * (mc[f'{k}_ci_high'] - mc[f'{k}_ci_low'])
    # with errors independent of groups the two are about the same
    p2 = np.where(rng.random(len(g)) < .6, t, (t + 1) % 4)
    df2 = df.assign(pred=p2)
    wc = np.subtract(*[metrics_from_preds(df2, CLASSES)[k] for k in ('accuracy_ci_high', 'accuracy_ci_low')])
    wg = np.subtract(*[metrics_from_preds(df2, CLASSES, group_bootstrap=True)[k] for k in ('accuracy_ci_high', 'accuracy_ci_low')])
    assert 0.6 < wg / wc < 1.6

def test_evaluate_preds_frame_and_row():
    cs = cells(200)
    sub = cs[np.arange(0, 200, 3)]
    preds, m = evaluate(Fake(), sub, 'post', 0.8, n_boot=100)
    assert list(preds.columns) == ['cell', 'group', 'true', 'pred'] + [f'prob_{c}' for c in CLASSES] + ['condition', 'sigma']
    assert preds.cell.tolist() == list(range(0, 200, 3))
    assert (preds.condition == 'post').all() and (preds.sigma == 0.8).all()
    assert m['condition'] == 'post' and m['sigma'] == 0.8 and m['model'] == 'fake' and m['n'] == len(sub)
    assert 0 <= m['ece'] <= 1
    r = row_from_metrics(m, run_id='abc', seed=3)
    assert r['status'] == 'ok' and r['run_id'] == 'abc' and r['train_seconds'] == 1.5 and r['accuracy'] == m['accuracy']

def test_ece_values():
    assert expected_calibration_error(np.full(10, .9), np.arange(10) < 9) == pytest.approx(0)
    assert expected_calibration_error(np.full(10, .9), np.arange(10) < 5) == pytest.approx(.4)
    assert expected_calibration_error([0.0, 1.0], [False, True]) == pytest.approx(0)

def test_paired_compare():
    cs = cells(600)
    pa, _ = evaluate(Fake(acc=.9, seed=1), cs, n_boot=0)
    pb, _ = evaluate(Fake(acc=.6, seed=2), cs, n_boot=0)
    r = paired_compare(pa, pb, n_boot=2000)
    assert r['diff'] > 0.2 and r['ci_low'] > 0 and r['p'] < 0.01
    assert r['ci_low'] <= r['diff'] <= r['ci_high']
    rb = paired_compare(pb, pa)
    assert rb['diff'] == pytest.approx(-r['diff'])
    same = paired_compare(pa, pa.sample(frac=1, random_state=1))
    assert same['diff'] == 0 and same['p'] == 1.0
    close = paired_compare(pa, evaluate(Fake(acc=.9, seed=3), cs, n_boot=0)[0])   # equally good, different errors
    assert close['p'] > 0.05 and close['ci_low'] < 0 < close['ci_high']
    g = paired_compare(pa, pb, group_bootstrap=True)
    assert g['diff'] == r['diff']
    assert paired_compare(pa, pb, seed=4) == paired_compare(pa, pb, seed=4)

@pytest.mark.parametrize("metric,fn", [('weighted_f1', lambda t, p: f1_score(t, p, average='weighted')),
                                       ('accuracy', accuracy_score), ('macro_f1', lambda t, p: f1_score(t, p, average='macro'))])
def test_paired_compare_metric(metric, fn):
    "Each metric's difference is sklearn's; its image-bootstrap CI holds it and differs from the other metrics' CI."
    cs = cells(400)
    pa, _ = evaluate(Fake(acc=.85, seed=1), cs, n_boot=0)
    pb, _ = evaluate(Fake(acc=.7, seed=2), cs, n_boot=0)
    r = paired_compare(pa, pb, n_boot=500, group_bootstrap=True, metric=metric)
    assert r['metric'] == metric and r['diff'] == pytest.approx(fn(pa.true, pa.pred) - fn(pb.true, pb.pred), abs=1e-12)
    assert r[f'{metric}_a'] == pytest.approx(fn(pa.true, pa.pred)) and r['ci_low'] < r['diff'] < r['ci_high']
    other = paired_compare(pa, pb, n_boot=500, group_bootstrap=True, metric='macro_f1' if metric != 'macro_f1' else 'accuracy')
    assert (other['ci_low'], other['ci_high']) != (r['ci_low'], r['ci_high'])
    with pytest.raises(CellnbError, match="metric='f1'.*weighted_f1"): paired_compare(pa, pb, metric='f1')

def test_paired_compare_alignment_errors():
    cs = cells(100)
    pa, _ = evaluate(Fake(), cs, n_boot=0)
    pb, _ = evaluate(Fake(), cs[np.arange(50)], n_boot=0)
    with pytest.raises(CellnbError, match="different cells"): paired_compare(pa, pb)
    with pytest.raises(CellnbError, match="more than once"): paired_compare(pd.concat([pa, pa]), pa)
    with pytest.raises(CellnbError, match="true label"): paired_compare(pa, pa.assign(true=pa.true[::-1].to_numpy()))
    with pytest.raises(CellnbError, match="cell"): paired_compare(pa.drop(columns='cell'), pa)

@pytest.mark.parametrize("cond,sigma,msg", [('blurry', 1.0, "condition='blurry'"), ('pre', -0.5, "sigma=-0.5"),
                                             ('post', float('nan'), "sigma=nan"), ('clean', 0.4, "'pre' or 'post'"),
                                             ('pre', 'x', "not a number")])
def test_evaluate_bad_condition(cond, sigma, msg):
    with pytest.raises(CellnbError, match=msg): evaluate(Fake(), cells(20), cond, sigma)

def test_evaluate_bad_inputs():
    cs = cells(20)
    with pytest.raises(CellnbError, match="empty"): evaluate(Fake(), cs[np.arange(0)])
    other = CellSet(cs.images, cs.labels, ['w', 'x', 'y', 'z'])
    with pytest.raises(CellnbError, match="differ"): evaluate(Fake(), other)
    class Short(Fake):
        def predict_proba(self, cellset, **kw): return np.ones((3, 4)) / 4
    with pytest.raises(CellnbError, match="shape"): evaluate(Short(), cs)
    class NaNs(Fake):
        def predict_proba(self, cellset, **kw): return np.full((len(cellset), 4), np.nan)
    with pytest.raises(CellnbError, match="non-finite"): evaluate(NaNs(), cs)
    df = pd.DataFrame(dict(true=['a', 'zz'], pred=['a', 'a']))
    with pytest.raises(CellnbError, match="'zz'"): metrics_from_preds(df, CLASSES)
    with pytest.raises(CellnbError, match="pred"): metrics_from_preds(df.drop(columns='pred'), CLASSES)
    with pytest.raises(CellnbError, match="group"): metrics_from_preds(df.assign(true='a'), CLASSES, group_bootstrap=True)
    with pytest.raises(CellnbError, match="needs a CellSet"): evaluate(Fake(), cs.images)
    ok = pd.DataFrame(dict(true=['a', 'b'], pred=['a', 'a']))
    for kw, msg in [(dict(n_boot=1.5), "n_boot=1.5"), (dict(n_boot='1000'), "n_boot='1000'"), (dict(n_boot=-5), "n_boot=-5"),
                    (dict(n_bins=0), "n_bins=0"), (dict(seed=-1), "seed=-1"), (dict(seed=None), "seed=None")]:
        with pytest.raises(CellnbError, match=msg): metrics_from_preds(ok, CLASSES, **kw)
    assert metrics_from_preds(ok, CLASSES, n_boot=0, seed=np.int64(3))['n_boot'] == 0

def test_per_class_metrics_match_sklearn_with_cis():
    rng = np.random.default_rng(4)
    t = rng.integers(0, 4, 800); p = np.where(rng.random(800) < .7, t, rng.integers(0, 4, 800))
    df = pd.DataFrame(dict(true=np.array(CLASSES)[t], pred=np.array(CLASSES)[p], group=[f"g{i % 25}" for i in range(800)]))
    pc = per_class_metrics(df, CLASSES, n_boot=500)
    prec, rec, f1, sup = precision_recall_fscore_support(df.true, df.pred, labels=CLASSES, zero_division=0)
    assert pc['class'].tolist() == CLASSES and pc['support'].tolist() == sup.tolist()
    for name, ref in zip(PER_CLASS_SCORES, (prec, rec, f1)):
        assert np.allclose(pc[name], ref, atol=1e-12)
        assert (pc[f'{name}_ci_low'] <= pc[name]).all() and (pc[name] <= pc[f'{name}_ci_high']).all()
        assert (pc[f'{name}_ci_high'] - pc[f'{name}_ci_low'] > 0.02).all()
    assert set(pc['bootstrap']) == {'cell'} and set(pc['n']) == {800} and set(pc['n_groups']) == {25}
    m = metrics_from_preds(df, CLASSES, n_boot=500)
    assert m['per_class']['a']['f1_ci_low'] == pc.loc[0, 'f1_ci_low']   # the same numbers, from the same resamples
    assert per_class_metrics(df, CLASSES, n_boot=500).equals(pc)       # deterministic

def test_per_class_bootstrap_matches_sklearn_per_resample():
    rng = np.random.default_rng(5)
    t = rng.integers(0, 3, 200); p = np.where(rng.random(200) < .6, t, rng.integers(0, 3, 200))
    cms = _boot_confusions([t * 3 + p], 9, None, 30, 0)[0].reshape(30, 3, 3)
    idx = np.random.default_rng(0).integers(0, 200, size=(30, 200))
    ref = np.array([precision_recall_fscore_support(t[i], p[i], labels=[0, 1, 2], zero_division=0)[:3] for i in idx])
    for j, v in enumerate(_per_class_scores(cms)): assert np.allclose(v, ref[:, j], atol=1e-12)

def test_per_class_group_bootstrap_wider_and_edge_classes():
    rng = np.random.default_rng(0)
    g = np.repeat(np.arange(30), 40); q = rng.random(30)
    t = rng.integers(0, 4, len(g)); p = np.where(rng.random(len(g)) < q[g], t, (t + 1) % 4)
    df = pd.DataFrame(dict(true=t, pred=p, group=g))
    w = lambda d: (d['f1_ci_high'] - d['f1_ci_low']).to_numpy()
    cell, grp = per_class_metrics(df, CLASSES), per_class_metrics(df, CLASSES, group_bootstrap=True)
    assert (w(grp) > 1.5 * w(cell)).all() and set(grp['bootstrap']) == {'group'}
    # 'c' present but never predicted: precision, recall and F1 0 with a [0, 0] interval; 'd' absent from the test set
    never = per_class_metrics(pd.DataFrame(dict(true=list('aabbcc'), pred=list('aabbaa'))), CLASSES, n_boot=100).set_index('class')
    assert never.loc['c', ['precision', 'recall', 'f1', 'f1_ci_low', 'f1_ci_high']].tolist() == [0.0] * 5
    assert never.loc['d', 'support'] == 0 and math.isnan(never.loc['d', 'recall_ci_low'])
    assert per_class_metrics(df, CLASSES, n_boot=0)[['f1_ci_low', 'precision_ci_high']].isna().all().all()
    with pytest.raises(CellnbError, match="group"): per_class_metrics(df.drop(columns='group'), CLASSES, group_bootstrap=True)
