"Tests of cellnb.transforms: blur placement and its resolution correction, resize, augmentation, the pipeline spec."
import json, math
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from cellnb.core import CellnbError
from cellnb.transforms import CellPipeline, gaussian_blur, blur_kernel_size, augment_batch, resize, pipeline_for, hed_jitter

def _delta(n=41):
    d = torch.zeros(1, 1, n, n); d[..., n//2, n//2] = 1.
    return d

def _width(img):
    "Spatial std (px) along x of a non-negative 2-D image."
    img = img.squeeze().double(); n = img.shape[-1]
    w = (img / img.sum()).sum(0); xs = torch.arange(n, dtype=torch.float64)
    mx = (w * xs).sum()
    return float((w * (xs - mx)**2).sum().sqrt())

NOSTAT = dict(mean=(0, 0, 0), std=(1, 1, 1))

def test_sigma_zero_is_identity():
    x = torch.rand(3, 3, 40, 40)
    assert gaussian_blur(x, 0) is x
    xb = (torch.rand(3, 3, 64, 64) * 255).to(torch.uint8)
    clean = CellPipeline(64)(xb)
    for b in ('source', 'pre', 'post', None, 'clean'):
        assert torch.equal(CellPipeline(64, blur=b, sigma=0.0)(xb), clean)

@pytest.mark.parametrize('sigma', [0.8, 1.6, 2.4])
def test_delta_width_matches_sigma(sigma):
    assert abs(_width(gaussian_blur(_delta(), sigma)) - sigma) < 0.03 * sigma

def test_kernel_size_rule():
    assert blur_kernel_size(1.0) == 7 and blur_kernel_size(0.4) == 5 and blur_kernel_size(2.4) == 17
    x = torch.rand(2, 3, 40, 40)
    assert torch.allclose(gaussian_blur(x, 1.0), TF.gaussian_blur(x, [7, 7], [1.0, 1.0]), atol=1e-5)

@pytest.mark.parametrize('S', [64, 80, 120])
@pytest.mark.parametrize('sigma', [1.2, 2.4])
def test_source_blur_resolution_correction(S, sigma):
    "Source blur at S with sigma*S/40 gives a spot of width sigma at 40 px, like pre blur (resize width removed in quadrature)."
    d = torch.zeros(1, 3, S, S); d[..., S//2, S//2] = 1.
    base = _width(CellPipeline(S, **NOSTAT)(d)[0, 0])
    src = _width(CellPipeline(S, blur='source', sigma=sigma, **NOSTAT)(d)[0, 0])
    pre = _width(CellPipeline(S, blur='pre', sigma=sigma, **NOSTAT)(d)[0, 0])
    corr = lambda w: math.sqrt(max(w**2 - base**2, 0))
    assert abs(corr(src) - sigma) < 0.1 * sigma
    assert abs(corr(pre) - sigma) < 0.1 * sigma
    assert CellPipeline(S, blur='source', sigma=sigma).source_sigma() == pytest.approx(sigma * S / 40)

def test_source_matches_pre_on_smooth_image():
    S = 80
    yy, xx = torch.meshgrid(torch.linspace(0, 1, S), torch.linspace(0, 1, S), indexing='ij')
    img = torch.stack([torch.sin(6.28*(1.3*xx + 0.4*yy)), torch.cos(6.28*(0.7*yy)), torch.sin(6.28*(0.5*xx + 1.1*yy) + 1)])
    img = ((img + 1) / 2)[None]
    src = CellPipeline(S, blur='source', sigma=1.6, **NOSTAT)(img)[..., 8:-8, 8:-8]
    pre = CellPipeline(S, blur='pre', sigma=1.6, **NOSTAT)(img)[..., 8:-8, 8:-8]
    assert (src - pre).abs().max() < 0.02

def test_blur_reduces_detail():
    xb = (torch.rand(4, 3, 80, 80) * 255).to(torch.uint8)
    grad = lambda y: (y[..., 1:, :] - y[..., :-1, :]).abs().mean()
    clean = grad(CellPipeline(80, **NOSTAT)(xb))
    for b in ('source', 'pre', 'post'):
        g1, g2 = grad(CellPipeline(80, blur=b, sigma=0.8, **NOSTAT)(xb)), grad(CellPipeline(80, blur=b, sigma=2.4, **NOSTAT)(xb))
        assert g2 < g1 < clean

def test_pipeline_shapes_and_normalisation():
    xb = (torch.rand(5, 3, 64, 64) * 255).to(torch.uint8)
    assert CellPipeline(64)(xb).shape == (5, 3, 40, 40)
    assert CellPipeline(64, model_size=224)(xb).shape == (5, 3, 224, 224)
    assert CellPipeline(64, augment=True)(xb).shape == (5, 3, 40, 40)
    y = CellPipeline(64, mean=(0.5,) * 3, std=(0.5,) * 3)(torch.full((1, 3, 64, 64), 255, dtype=torch.uint8))
    assert torch.allclose(y, torch.ones_like(y))

def test_spec_is_json_and_records_methods():
    s = CellPipeline(80, model_size=224, blur='source', sigma=1.2, augment=True).spec()
    json.dumps(s)
    assert s['interpolation'] == 'bilinear' and s['antialias'] is True and s['source_sigma_at_src'] == pytest.approx(2.4)
    assert any('resize 80->40' in st for st in s['steps']) and any('resize 40->224' in st for st in s['steps'])
    assert CellPipeline(80).spec() != CellPipeline(80, blur='post', sigma=0.4).spec()
    assert CellPipeline(80, blur='post', sigma=0).spec() == CellPipeline(80).spec()

def test_augment_seeded_and_symmetric():
    x = torch.rand(16, 3, 40, 40)
    a = augment_batch(x, torch.Generator().manual_seed(0)); b = augment_batch(x, torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    assert not torch.equal(a, augment_batch(x, torch.Generator().manual_seed(1)))
    a = augment_batch(x, torch.Generator().manual_seed(2), brightness=0, contrast=0, hed=0)
    syms = lambda im: [torch.rot90(t, r, dims=(-2, -1)) for t in (im, im.flip(-1)) for r in range(4)]
    assert all(any(torch.equal(a[i], s) for s in syms(x[i])) for i in range(len(x)))
    # colour jitter is mild
    j = augment_batch(x * 0.8 + 0.1, torch.Generator().manual_seed(3))
    assert j.min() >= 0 and j.max() <= 1

def test_hed_identity():
    x = torch.rand(2, 3, 20, 20) * 0.8 + 0.1
    assert torch.allclose(hed_jitter(x, torch.ones(2, 3), torch.zeros(2, 3)), x, atol=1e-4)

def test_pipeline_for_reads_model_attributes():
    class M(torch.nn.Module): input_size, mean, std = 40, (0.1, 0.2, 0.3), (0.4, 0.5, 0.6)
    p = pipeline_for(M(), 64, augment=True)
    assert p.model_size is None and p.mean == (0.1, 0.2, 0.3) and p.augment
    class B(torch.nn.Module): pass
    b = B(); b.cellnb_spec = type('S', (), dict(input_size=224, mean=(0.5,) * 3, std=(0.5,) * 3, interpolation='bicubic'))()
    p = pipeline_for(b, 64)
    assert p.model_size == 224 and p.model_interpolation == 'bicubic' and p.interpolation == 'bilinear'

def test_bad_inputs():
    with pytest.raises(CellnbError, match="'source'.*'pre'.*'post'"): CellPipeline(80, blur='before')
    with pytest.raises(CellnbError, match='sigma'): CellPipeline(80, blur='post', sigma=float('nan'))
    with pytest.raises(CellnbError, match='sigma'): CellPipeline(80, blur='post', sigma=-0.5)
    with pytest.raises(CellnbError, match='interpolation'): CellPipeline(80, interpolation='lanczos9')
    with pytest.raises(CellnbError, match=r'\(B,3,H,W\)'): CellPipeline(80)(torch.zeros(2, 4, 80, 80, dtype=torch.uint8))
    with pytest.raises(CellnbError, match='dtype'): CellPipeline(80)(torch.zeros(2, 3, 80, 80, dtype=torch.int32))

@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_cuda_matches_cpu():
    xb = (torch.rand(8, 3, 64, 64) * 255).to(torch.uint8)
    for kw in (dict(), dict(blur='source', sigma=1.2), dict(blur='pre', sigma=1.2), dict(blur='post', sigma=1.2, model_size=224), dict(model_size=224)):
        p = CellPipeline(64, **kw)
        assert torch.allclose(p(xb), p(xb.cuda()).cpu(), atol=1e-4)
    p = CellPipeline(64, augment=True)
    a = p(xb, torch.Generator().manual_seed(0)); b = p(xb.cuda(), torch.Generator().manual_seed(0)).cpu()
    assert torch.allclose(a, b, atol=1e-4)   # same seed -> same augmentation on CPU and CUDA
