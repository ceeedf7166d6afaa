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
    "Right with probability acc - drop*log2(1+sigma) (more for 'source'), else the next class; `input_size` as given."
    classes, family, train_seconds = CLASSES, 'scratch', 2.0
    def __init__(self, acc=0.9, drop=0.0, name='fake', protocol='scratch', input_size=None):
        self.acc, self.drop, self.model_name, self.protocol = acc, drop, name, protocol
        if input_size: self.input_size = input_size
        self.calls = []
    def predict_proba(self, cellset, condition='clean', sigma=0.0, bs=256):
        self.calls.append((condition, sigma))
        y = cellset.labels.numpy()
        k = 1.5 if condition == 'source' else 1.0
        u = np.random.default_rng(0).random(len(cellset.root))[cellset.root_idx]
        pred = np.where(u < self.acc - k * self.drop * np.log2(1 + sigma), y, (y + 1) % 4)
        p = np.full((len(y), 4), 0.1); p[np.arange(len(y)), pred] = 0.7
        return p

def test_sweep_conditions():
    c = sweep_conditions()
    assert c[0] == ('clean', 0.0) and len(c) == 13 and [x for x, _ in c].count('clean') == 1   # clean + 3 placements x 4 sigmas
    assert sorted({s for _, s in c if s}) == [0.5, 1.0, 1.6, 2.4] and [x for x, _ in c[1:]][::4] == ['source', 'pre', 'post']
    assert sweep_conditions((1.2, 0, 0.4), ('post',)) == [('clean', 0.0), ('post', 0.4), ('post', 1.2)]
    assert sweep_conditions((0.4,), 'pre') == [('pre', 0.4)]
    with pytest.raises(CellnbError, match="'middle'"): sweep_conditions(placements=('middle',))
    with pytest.raises(CellnbError, match="sigmas"): sweep_conditions((0, -1))
    with pytest.raises(CellnbError, match="sigmas"): sweep_conditions((0, float('inf')))
    with pytest.raises(CellnbError, match="empty"): sweep_conditions(())

def test_blur_sweep_rows_and_preds():
    f, cs = Fake(drop=0.2), cells()
    rows, preds = blur_sweep(f, cs, n_boot=100, fields=dict(run_id='r1', dataset='toy', seed=0))
    assert list(rows.columns) == RESULT_COLUMNS and len(rows) == 13
    assert rows.condition.tolist() == ['clean'] + ['source'] * 4 + ['pre'] * 4 + ['post'] * 4
    assert rows.sigma.tolist() == [0.0] + [0.5, 1.0, 1.6, 2.4] * 3
    assert (rows.model == 'fake').all() and (rows.protocol == 'scratch').all() and (rows.run_id == 'r1').all()
    assert (rows.status == 'ok').all() and (rows.accuracy_ci_low <= rows.accuracy).all() and (rows.accuracy <= rows.accuracy_ci_high).all()
    assert len(preds) == 13 * len(cs) and set(preds.condition) == {'clean', 'source', 'pre', 'post'}
    assert f.calls == [('clean', 0.0)] + [(pl, s) for pl in ('source', 'pre', 'post') for s in (0.5, 1.0, 1.6, 2.4)]
    # a model of unknown input size: post's 40-px sigma is unknown (NaN), not guessed
    assert rows[rows.condition == 'post'].sigma_40px.isna().all() and rows.post_equals_pre.isna().sum() == 4
    with pytest.raises(CellnbError, match="run_idd"): blur_sweep(f, cs, (0,), n_boot=0, fields=dict(run_idd=1))

@pytest.fixture(scope='module')
def rows():
    cs = cells()
    return pd.concat([blur_sweep(Fake(drop=0.2, name='sensitive', input_size=40), cs, n_boot=0)[0],
                      blur_sweep(Fake(drop=0.0, name='invariant', input_size=224), cs, n_boot=0)[0]], ignore_index=True)

def test_degradation_slope_sensitive_vs_invariant(rows):
    s = degradation_slope(rows, ['accuracy', 'macro_f1']).set_index(['model', 'placement', 'metric'])
    assert len(s) == 2 * 3 * 2 and set(s.n) == {5}   # clean + four sigmas per fit
    for place in ('source', 'pre', 'post'):
        for met in ('accuracy', 'macro_f1'):
            assert s.loc[('sensitive', place, met), 'ci_high'] < 0
            assert abs(s.loc[('invariant', place, met), 'slope']) < 1e-9
    # source degrades faster in this fake (1.5x); slope close to the built-in -0.2 / -0.3
    assert s.loc[('sensitive', 'source', 'accuracy'), 'slope'] < s.loc[('sensitive', 'pre', 'accuracy'), 'slope']
    assert s.loc[('sensitive', 'pre', 'accuracy'), 'slope'] == pytest.approx(-0.2, abs=0.05)
    assert s.loc[('sensitive', 'source', 'accuracy'), 'slope'] == pytest.approx(-0.3, abs=0.05)

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
    assert set(pooled.placement) == {'all'} and set(pooled.n) == {13}

def test_degradation_slope_edge_cases(rows):
    two = rows[rows.sigma.isin([0, 1.6])]
    s = degradation_slope(two)
    assert set(s.n) == {2} and s.slope.notna().all() and s.ci_low.isna().all()   # 2 points: slope, no CI
    failed = pd.concat([rows, rows.iloc[:1].assign(status='failed', accuracy=np.nan, condition='pre', sigma=5.0)])
    assert degradation_slope(failed).n.max() == 5   # failed rows are ignored
    with pytest.raises(CellnbError, match="sigma"): degradation_slope(rows.drop(columns='sigma'))
    with pytest.raises(CellnbError, match="empty"): degradation_slope(rows.iloc[:0])
    with pytest.raises(CellnbError, match="'blur'"): degradation_slope(rows.assign(condition='blur'))
    with pytest.raises(CellnbError, match="nope"): degradation_slope(rows, 'nope')

def test_degradation_slope_on_the_40px_axis(rows):
    "x='sigma_40px' fits against the same blur in 40-px pixels: equal to sigma for source/pre, sigma*40/224 for a backbone's post."
    s40 = degradation_slope(rows, 'accuracy', x='sigma_40px').set_index(['model', 'placement'])
    sa = degradation_slope(rows, 'accuracy').set_index(['model', 'placement'])
    assert set(s40.x) == {'sigma_40px'} and set(sa.x) == {'sigma'}
    for pl in ('source', 'pre', 'post'):   # a 40-px model: both axes are one axis
        assert s40.loc[('sensitive', pl), 'slope'] == pytest.approx(sa.loc[('sensitive', pl), 'slope'])
    inv = rows[(rows.model == 'invariant') & (rows.condition == 'post')]
    assert inv.sigma_40px.to_numpy() == pytest.approx(inv.sigma.to_numpy() * 40 / 224) and not inv.post_equals_pre.any()
    sens = rows[(rows.model == 'sensitive') & (rows.condition == 'post')]
    assert sens.post_equals_pre.all() and (sens.sigma_40px == sens.sigma).all()
    # the backbone's post fit on the 40-px axis uses the 40-px sigmas
    d = rows[(rows.model == 'invariant') & rows.condition.isin(['clean', 'post'])]
    r = stats.linregress(np.log2(1 + d.sigma_40px.to_numpy()), d.macro_f1.to_numpy() + np.arange(len(d)) * 0.01)
    got = degradation_slope(d.assign(macro_f1=d.macro_f1 + np.arange(len(d)) * 0.01), 'macro_f1', x='sigma_40px')
    assert got.slope.iloc[0] == pytest.approx(r.slope)
    with pytest.raises(CellnbError, match="x='log' unknown"): degradation_slope(rows, x='log')
    unknown = rows.assign(sigma_40px=np.where(rows.condition == 'post', np.nan, rows.sigma_40px))
    with pytest.raises(CellnbError, match="have no sigma_40px"): degradation_slope(unknown, x='sigma_40px')
