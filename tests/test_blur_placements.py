"""The three blur placements (source, pre, post): what each blurs for a 40-px model and a 224-px backbone, the 40-px-unit
sigma every row records, the post-equals-pre mark of 40-px models, and results written under the old two names."""
import math, warnings
import numpy as np, pandas as pd, pytest, torch
from cellnb.core import CellnbError
from cellnb.data import CellSet
from cellnb.transforms import CellPipeline, pipeline_for, gaussian_blur, resize, blur_record, BLUR_PLACEMENTS
from cellnb.evaluate import RESULT_COLUMNS, upgrade_blur_names
from cellnb.robustness import blur_sweep, degradation_slope
from cellnb.figures import load_results, check_results, blur_bars, run_slopes

RAW = dict(mean=(0, 0, 0), std=(1, 1, 1))

class _Backbone(torch.nn.Module):
    "A stand-in for a loaded backbone: only its spec matters to the pipeline (224 px, bicubic)."
    def __init__(self):
        super().__init__()
        self.cellnb_spec = type('Spec', (), dict(input_size=224, mean=(0.,) * 3, std=(1.,) * 3, interpolation='bicubic'))()

def _smooth(S=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, S), torch.linspace(0, 1, S), indexing='ij')
    img = sum(torch.sin(6.28 * (f[0] * xx + f[1] * yy) + f[2]) for f in torch.rand(4, 3, generator=g) * torch.tensor([3., 3., 6.28]))
    return ((img - img.min()) / (img.max() - img.min())).expand(1, 3, S, S).contiguous()

def _width(img):
    "Spatial std (px) of a blurred spot along x (first channel)."
    y = img[0, 0].double(); w = y / y.sum(); xs = torch.arange(y.shape[-1], dtype=torch.float64)
    m = (w.sum(0) * xs).sum()
    return float((w.sum(0) * (xs - m) ** 2).sum().sqrt())

def test_backbone_pre_and_post_blur_either_side_of_its_resize():
    "224-px backbone: pre = resize(blur(patch)), post = blur(resize(patch)); same sigma, different inputs."
    x = (torch.rand(3, 3, 48, 48) * 255).to(torch.uint8)
    bb = _Backbone()
    patch = resize(x.float() / 255, 40)                                         # the 40-px patch every model sees
    pre = pipeline_for(bb, 48, blur='pre', sigma=1.6)(x)
    post = pipeline_for(bb, 48, blur='post', sigma=1.6)(x)
    assert torch.allclose(pre, resize(gaussian_blur(patch, 1.6), 224, 'bicubic'), atol=1e-5)
    assert torch.allclose(post, gaussian_blur(resize(patch, 224, 'bicubic'), 1.6), atol=1e-5)
    assert (pre - post).abs().mean() > 0.02                                     # not the same test
    # the expected difference: upsampling by 224/40 stretches the blur, so post at s is pre at s*40/224 (and post at
    # s*224/40 is pre at s), up to the interpolation's own smoothing, on a smooth image away from the borders
    img, inner = _smooth(), (..., slice(40, -40), slice(40, -40))
    bp = lambda pl, s: pipeline_for(bb, 48, blur=pl, sigma=s, interpolation='bilinear', model_interpolation='bilinear')(img)[inner]
    assert (bp('post', 1.6) - bp('pre', 1.6 * 40 / 224)).abs().max() < 0.01
    assert (bp('post', 1.6 * 224 / 40) - bp('pre', 1.6)).abs().max() < 0.01
    assert (bp('post', 1.6) - bp('pre', 1.6)).abs().max() > 0.03

def test_forty_px_model_post_is_pre():
    x = (torch.rand(4, 3, 48, 48) * 255).to(torch.uint8)
    m = torch.nn.Module()                                                       # no cellnb_spec: a 40-px model
    assert torch.equal(pipeline_for(m, 48, blur='post', sigma=1.2)(x), pipeline_for(m, 48, blur='pre', sigma=1.2)(x))
    assert blur_record('post', 1.2, 40) == dict(sigma_40px=1.2, post_equals_pre=True)
    assert blur_record('post', 1.2, 224)['post_equals_pre'] is False

@pytest.mark.parametrize('size', [40, 224])
def test_sigma_40px_is_the_blur_measured_at_40px(size):
    "A delta blurred in each placement: its width, in pixels of the 40-px patch, is the row's sigma_40px."
    S, sigma = 80, 1.6 if size == 40 else 6.0
    d = torch.zeros(1, 3, S, S); d[..., S // 2, S // 2] = 1.
    kw = dict(model_size=None if size == 40 else size, interpolation='bilinear', **RAW)
    base = _width(CellPipeline(S, **kw)(d))
    for pl in BLUR_PLACEMENTS:
        p = CellPipeline(S, blur=pl, sigma=sigma, **kw)
        w40 = math.sqrt(max(_width(p(d)) ** 2 - base ** 2, 0)) * 40 / p.out_size   # the resizes' own width removed in quadrature
        expect = blur_record(pl, sigma, size)['sigma_40px']
        assert p.sigma_40px == pytest.approx(expect)
        assert w40 == pytest.approx(expect, rel=0.12), (pl, w40, expect)
    assert blur_record('source', 1.6, 224)['sigma_40px'] == blur_record('pre', 1.6, 224)['sigma_40px'] == 1.6
    assert blur_record('post', 1.6, 224)['sigma_40px'] == pytest.approx(1.6 * 40 / 224)

class _Model:
    "A duck-typed fitted model whose inputs go through the real pipeline; accuracy falls with the blur it sees."
    classes, family, protocol, train_seconds = ['a', 'b'], 'scratch', 'scratch', 0.0
    def __init__(self, name, input_size): self.model_name, self.input_size = name, input_size
    def predict_proba(self, cellset, condition='clean', sigma=0.0, bs=256):
        p = CellPipeline(cellset.size, model_size=None if self.input_size == 40 else self.input_size,
                         blur=None if condition == 'clean' else condition, sigma=sigma, **RAW)
        x = p(cellset.images)
        e = (x[..., 1:, :] - x[..., :-1, :]).abs().mean((1, 2, 3)).numpy() * x.shape[-1] / 40   # detail per 40-px pixel
        z = (e - 0.04) * 100
        return np.stack([1 / (1 + np.exp(z)), 1 / (1 + np.exp(-z))], 1)

def _cells(n=60, S=48):
    g = torch.Generator().manual_seed(0)
    lab = torch.arange(n) % 2
    img = 128 + 10 * torch.randn(n, 1, S, S, generator=g) + (lab * 60)[:, None, None, None] * torch.randn(n, 1, S, S, generator=g)
    return CellSet(img.clamp(0, 255).to(torch.uint8).expand(-1, 3, -1, -1).contiguous(), lab, ['a', 'b'])

def test_rows_record_each_placement():
    cs = _cells()
    rows = pd.concat([blur_sweep(_Model('small', 40), cs, n_boot=0)[0], blur_sweep(_Model('bb', 224), cs, n_boot=0)[0]], ignore_index=True)
    assert list(rows.columns) == RESULT_COLUMNS and set(rows.condition) == {'clean', 'source', 'pre', 'post'}
    small, bb = rows[rows.model == 'small'], rows[rows.model == 'bb']
    assert small[small.condition == 'post'].post_equals_pre.all() and not bb.post_equals_pre.any()
    assert (small.input_size == 40).all() and (bb.input_size == 224).all()
    blur = bb[bb.condition != 'clean']
    expect = np.where(blur.condition == 'post', blur.sigma * 40 / 224, blur.sigma)
    assert blur.sigma_40px.to_numpy() == pytest.approx(expect)
    # post-resize blur of the backbone's input is milder than the same sigma before its resize
    at = bb[bb.sigma == 2.4].set_index('condition').accuracy
    assert at['post'] > at['pre'] + 0.2 and bb[bb.condition == 'clean'].accuracy.iloc[0] > 0.9
    s = degradation_slope(rows, 'accuracy', x='sigma_40px').set_index(['model', 'placement'])
    assert set(s.n) == {5} and s.ci_low.notna().all()                           # clean + four sigmas: a fit with a CI
    # the figures leave out a 40-px model's post (it is its pre test again)
    sl = run_slopes(rows.assign(run_id=rows.model, family='scratch', flag_limit=64, seed=0, status='ok', macro_f1=rows.accuracy))
    assert set(sl[sl.model == 'small'].placement) == {'source', 'pre'} and set(sl[sl.model == 'bb'].placement) == {'source', 'pre', 'post'}

def _old_study(tmp_path, conditions=('clean', 'pre', 'post')):
    rows = [dict(run_id='r0', dataset='crchisto', model='cnn', family='scratch', protocol='scratch', flag_limit=64, seed=0,
                 condition=c, sigma=0.0 if c == 'clean' else 1.6, macro_f1=0.7 - 0.1 * (c != 'clean'), accuracy=0.7, status='ok')
            for c in conditions]
    pd.DataFrame(rows).to_parquet(tmp_path / 'results.parquet')               # the old schema: no sigma_40px column
    return tmp_path

def test_old_results_file_is_mapped(tmp_path):
    with pytest.warns(UserWarning, match="old blur names .*read 'pre' as 'source' and 'post' as 'pre'"):
        r = load_results(_old_study(tmp_path))
    assert r.condition.tolist() == ['clean', 'source', 'pre'] and r.sigma_40px.tolist() == [0.0, 1.6, 1.6]
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        bars = pd.DataFrame(next(iter(blur_bars(r).to_dict()['datasets'].values())))
    assert set(bars.condition) == {'clean', 'source', 'pre'}                    # no 'post' invented from old rows

def test_old_rows_in_todays_columns_are_mapped_and_unknown_placements_refused(tmp_path):
    from cellnb.evaluate import result_row
    old = [result_row(run_id='o', condition=c, sigma=s, macro_f1=0.5) for c, s in (('clean', 0.0), ('pre', 1.6), ('post', 1.6))]
    new = [result_row(run_id='n', condition=c, sigma=s, sigma_40px=s, input_size=40, post_equals_pre=c == 'post', macro_f1=0.5)
           for c, s in (('clean', 0.0), ('pre', 1.6), ('post', 1.6))]
    with pytest.warns(UserWarning, match='1 run'):
        m = upgrade_blur_names(pd.DataFrame(old + new))
    assert m.condition.tolist() == ['clean', 'source', 'pre', 'clean', 'pre', 'post']
    bad = _old_study(tmp_path, ('clean', 'middle'))
    with pytest.raises(CellnbError, match=r"holds blur placement\(s\) \['middle'\]"): load_results(bad)
    with pytest.raises(CellnbError, match='placements are'): check_results(pd.DataFrame(new).assign(condition='after'))
