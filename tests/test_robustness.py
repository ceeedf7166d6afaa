"Tests for cellnb.robustness: blur sweep rows and degradation slopes."
import math
import numpy as np, pandas as pd, pytest, torch
from scipy import stats
from cellnb.core import CellnbError
from cellnb.data import CellSet
from cellnb.evaluate import RESULT_COLUMNS
from cellnb.robustness import blur_sweep, degradation_slope, sweep_conditions

CLASSES = ['a', 'b', 'c', 'd']

def cells(n=400, seed=0):
    g = torch.Generator().manual_seed(seed)
    img = torch.randint(0, 256, (n, 3, 40, 40), generator=g, dtype=torch.uint8)
    return CellSet(img, np.arange(n) % 4, CLASSES, groups=[f"s{i % 20}" for i in range(n)])

class Fake:
    "Right with probability acc - drop*log2(1+sigma) (more for 'pre'), else the next class."
    classes, family, train_seconds = CLASSES, 'scratch', 2.0
    def __init__(self, acc=0.9, drop=0.0, name='fake', protocol='scratch'):
        self.acc, self.drop, self.model_name, self.protocol = acc, drop, name, protocol
        self.calls = []
    def predict_proba(self, cellset, condition='clean', sigma=0.0, bs=256):
        self.calls.append((condition, sigma))
        y = cellset.labels.numpy()
        k = 1.5 if condition == 'pre' else 1.0
        u = np.random.default_rng(0).random(len(cellset.root))[cellset.root_idx]
        pred = np.where(u < self.acc - k * self.drop * np.log2(1 + sigma), y, (y + 1) % 4)
        p = np.full((len(y), 4), 0.1); p[np.arange(len(y)), pred] = 0.7
        return p

def test_sweep_conditions():
    c = sweep_conditions()
    assert c[0] == ('clean', 0.0) and len(c) == 11 and [x for x, _ in c].count('clean') == 1
    assert sweep_conditions((1.2, 0, 0.4), ('post',)) == [('clean', 0.0), ('post', 0.4), ('post', 1.2)]
    assert sweep_conditions((0.4,), 'pre') == [('pre', 0.4)]
    with pytest.raises(CellnbError, match="'middle'"): sweep_conditions(placements=('middle',))
    with pytest.raises(CellnbError, match="sigmas"): sweep_conditions((0, -1))
    with pytest.raises(CellnbError, match="sigmas"): sweep_conditions((0, float('inf')))
    with pytest.raises(CellnbError, match="empty"): sweep_conditions(())

def test_blur_sweep_rows_and_preds():
    f, cs = Fake(drop=0.2), cells()
    rows, preds = blur_sweep(f, cs, n_boot=100, fields=dict(run_id='r1', dataset='toy', seed=0))
    assert list(rows.columns) == RESULT_COLUMNS and len(rows) == 11
    assert rows.condition.tolist() == ['clean'] + ['pre'] * 5 + ['post'] * 5
    assert rows.sigma.tolist() == [0.0] + [0.4, 0.8, 1.2, 1.6, 2.4] * 2
    assert (rows.model == 'fake').all() and (rows.protocol == 'scratch').all() and (rows.run_id == 'r1').all()
    assert (rows.status == 'ok').all() and (rows.accuracy_ci_low <= rows.accuracy).all() and (rows.accuracy <= rows.accuracy_ci_high).all()
    assert len(preds) == 11 * len(cs) and set(preds.condition) == {'clean', 'pre', 'post'}
    assert f.calls == [('clean', 0.0)] + [('pre', s) for s in (0.4, 0.8, 1.2, 1.6, 2.4)] + [('post', s) for s in (0.4, 0.8, 1.2, 1.6, 2.4)]
    with pytest.raises(CellnbError, match="run_idd"): blur_sweep(f, cs, (0,), n_boot=0, fields=dict(run_idd=1))

@pytest.fixture(scope='module')
def rows():
    cs = cells()
    return pd.concat([blur_sweep(Fake(drop=0.2, name='sensitive'), cs, n_boot=0)[0],
                      blur_sweep(Fake(drop=0.0, name='invariant'), cs, n_boot=0)[0]], ignore_index=True)

def test_degradation_slope_sensitive_vs_invariant(rows):
    s = degradation_slope(rows, ['accuracy', 'macro_f1']).set_index(['model', 'placement', 'metric'])
    assert len(s) == 2 * 2 * 2 and set(s.n) == {6}
    for place in ('pre', 'post'):
        for met in ('accuracy', 'macro_f1'):
            assert s.loc[('sensitive', place, met), 'ci_high'] < 0
            assert abs(s.loc[('invariant', place, met), 'slope']) < 1e-9
    # pre degrades faster in this fake (1.5x); slope close to the built-in -0.2 / -0.3
    assert s.loc[('sensitive', 'pre', 'accuracy'), 'slope'] < s.loc[('sensitive', 'post', 'accuracy'), 'slope']
    assert s.loc[('sensitive', 'post', 'accuracy'), 'slope'] == pytest.approx(-0.2, abs=0.05)
    assert s.loc[('sensitive', 'pre', 'accuracy'), 'slope'] == pytest.approx(-0.3, abs=0.05)

def test_degradation_slope_matches_scipy_and_shares_clean_point(rows):
    d = rows[(rows.model == 'sensitive') & rows.condition.isin(['clean', 'post'])]
    r = stats.linregress(np.log2(1 + d.sigma.to_numpy()), d.accuracy.to_numpy())
    s = degradation_slope(rows, 'accuracy')
    got = s[(s.model == 'sensitive') & (s.placement == 'post')].iloc[0]
    h = stats.t.ppf(0.975, len(d) - 2) * r.stderr
    assert got.slope == pytest.approx(r.slope) and got.intercept == pytest.approx(r.intercept)
    assert got.ci_low == pytest.approx(r.slope - h) and got.ci_high == pytest.approx(r.slope + h)
    assert got.metric == 'accuracy' and got.condition == 'post'
    # by without 'condition': one pooled fit over clean + pre + post
    pooled = degradation_slope(rows, by=('model',))
    assert set(pooled.placement) == {'all'} and set(pooled.n) == {11}

def test_degradation_slope_edge_cases(rows):
    two = rows[rows.sigma.isin([0, 0.8])]
    s = degradation_slope(two)
    assert set(s.n) == {2} and s.slope.notna().all() and s.ci_low.isna().all()   # 2 points: slope, no CI
    failed = pd.concat([rows, rows.iloc[:1].assign(status='failed', accuracy=np.nan, condition='pre', sigma=5.0)])
    assert degradation_slope(failed).n.max() == 6   # failed rows are ignored
    with pytest.raises(CellnbError, match="sigma"): degradation_slope(rows.drop(columns='sigma'))
    with pytest.raises(CellnbError, match="empty"): degradation_slope(rows.iloc[:0])
    with pytest.raises(CellnbError, match="'blur'"): degradation_slope(rows.assign(condition='blur'))
    with pytest.raises(CellnbError, match="nope"): degradation_slope(rows, 'nope')
