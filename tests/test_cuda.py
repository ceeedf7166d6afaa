"""The CUDA path of every protocol, evaluation and the cost measurement: run on a GPU (`tools/gpu_check.sh`).

Skipped where torch sees no GPU (CI, the development CPU). Each test compares the CUDA result with what the CPU gives,
so a device mix-up, a bf16 array reaching numpy, or an unsynchronised timer fails here rather than in a user's study.
"""
import os
import numpy as np
import pytest
import torch

# CELLNB_TEST_DEVICE=cpu runs the same tests on CPU: a check of the tests themselves before a GPU's few minutes.
DEV = os.environ.get('CELLNB_TEST_DEVICE', 'cuda')
pytestmark = pytest.mark.skipif(DEV.startswith('cuda') and not torch.cuda.is_available(), reason='needs CUDA')

# test_train's easy cells, its isolated cache and narrow CNN (tests/ is on sys.path under pytest)
from test_train import cells, _cache, TINY, acc   # noqa: E402,F401

def _float32_probs(p, n, c=4):
    assert isinstance(p, np.ndarray) and p.dtype == np.float32 and p.shape == (n, c)
    assert np.allclose(p.sum(1), 1, atol=1e-3)

@pytest.mark.parametrize('arch,kw', [('cnn', TINY), ('custom_vit', dict(model_kwargs=dict(dim=32, depth=2, num_heads=2)))])
def test_scratch_trains_on_cuda_and_reloads_on_cpu(cells, tmp_path, arch, kw):
    from cellnb.train import fit_cell_model, FittedModel
    cs, tr, va = cells
    fm = fit_cell_model('scratch', arch, tr, va, epochs=3, bs=8, lr=1e-2, device=DEV, progress=False, **kw)
    assert fm.device == torch.device(DEV) and next(fm.model.parameters()).dtype == torch.float32   # bf16 autocast, fp32 weights
    p = fm.predict_proba(va); _float32_probs(p, len(va))
    _float32_probs(fm.predict_proba(va, tta=True), len(va))
    for cond in ('pre', 'post'): _float32_probs(fm.predict_proba(va, condition=cond, sigma=1.2), len(va))
    fm.save(tmp_path/'m')
    cpu = FittedModel.load(tmp_path/'m', device='cpu')
    q = cpu.predict_proba(va)
    assert (p.argmax(1) == q.argmax(1)).mean() >= 0.95 and np.abs(p - q).max() < 0.05   # bf16 on CUDA vs fp32 on CPU
    assert acc(fm, va) > 0.4

def test_probe_embeddings_on_cuda_match_cpu(cells):
    "The real ImageNet EfficientNet-Lite0 (bf16 autocast on CUDA) embeds the cells as fp32 on CPU does, to bf16 precision."
    from cellnb.foundation import load_backbone, embed
    cs, tr, va = cells
    bb = load_backbone('effnet_lite0_in1k')
    a = embed(bb, va, device='cpu', cache=False, progress=False)
    b = embed(bb, va, device=DEV, cache=False, progress=False)
    assert b.dtype == torch.float32 and b.device.type == 'cpu' and a.shape == b.shape
    assert torch.nn.functional.cosine_similarity(a, b).min() > 0.98

@pytest.mark.parametrize('protocol', ['linear_probe', 'ft_last', 'full_ft'])
def test_foundation_protocols_on_cuda(cells, protocol):
    from cellnb.train import fit_cell_model
    cs, tr, va = cells
    fm = fit_cell_model(protocol, 'effnet_lite0_in1k', tr, va, epochs=1, bs=16, device=DEV, progress=False, cache=False)
    _float32_probs(fm.predict_proba(va), len(va))
    _float32_probs(fm.predict_proba(va, condition='pre', sigma=1.2), len(va))
    assert fm.train_seconds > 0

def test_evaluate_and_blur_sweep_on_cuda(cells):
    from cellnb.train import fit_cell_model
    from cellnb.robustness import blur_sweep
    cs, tr, va = cells
    fm = fit_cell_model('scratch', 'cnn', tr, va, epochs=2, bs=8, lr=1e-2, device=DEV, progress=False, **TINY)
    rows, preds = blur_sweep(fm, va, sigmas=(0, 1.2), n_boot=20)
    assert len(rows) == 3 and rows['macro_f1'].between(0, 1).all() and len(preds) == 3 * len(va)

def test_model_cost_on_cuda_times_and_counts_like_cpu():
    from cellnb.models import create_model
    from cellnb.cost import model_cost, count_flops
    m = create_model('custom_vit', n_classes=4)
    c = model_cost(m, 40, batch_sizes=(1, 256), device=DEV, dtype=torch.bfloat16, repeats=3)
    assert c['latency_ms_per_patch'] > 0 and c['throughput_bs256'] > c['throughput_bs1'] and c['peak_mem_mb'] > 0
    assert next(m.parameters()).device.type == 'cpu'   # handed back where it came from
    assert c['gflops'] * 1e9 == count_flops(m, 40)     # the FLOP count does not depend on the device
