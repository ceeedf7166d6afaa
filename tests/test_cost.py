import subprocess, sys, time
import pytest, torch, torch.nn as nn
from cellnb.core import CellnbError
from cellnb.cost import model_cost, cost_table, count_flops, count_params, spread, core_load, CompiledModel, BUSY_LOAD

def tiny():
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))

def calibrated(net, x):
    "`net` in eval mode with batch-norm statistics from `x` (random weights with default statistics give the CNN near-constant outputs)."
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm): m.reset_running_stats(); m.momentum = None
    with torch.no_grad(): net.train()(x)
    return net.eval()

def test_model_cost_keys_and_values():
    m = tiny()
    c = model_cost(m, 16, batch_sizes=(1, 8), warmup=1, repeats=5)
    assert set(c) == {'params', 'gflops', 'latency_ms_per_patch', 'latency_ms_per_patch_bs1', 'latency_ms_per_patch_bs8',
                      'throughput_bs1', 'throughput_bs8', 'peak_mem_mb', 'path', 'compile_s', 'repeats', 'busy', 'load_before', 'load_after',
                      *(f'latency_{k}_ms_per_patch_bs{b}' for k in ('q1', 'q3', 'min', 'max') for b in (1, 8))}
    assert c['params'] == 3 * 4 * 9 + 4 + 4 * 2 + 2
    assert c['gflops'] == pytest.approx(2 * (3 * 9 * 4 * 16 * 16 + 4 * 2) / 1e9)
    assert c['latency_ms_per_patch'] == c['latency_ms_per_patch_bs1'] > 0
    assert c['throughput_bs8'] == pytest.approx(1000 / c['latency_ms_per_patch_bs8'])
    assert c['latency_min_ms_per_patch_bs8'] <= c['latency_q1_ms_per_patch_bs8'] <= c['latency_ms_per_patch_bs8'] \
        <= c['latency_q3_ms_per_patch_bs8'] <= c['latency_max_ms_per_patch_bs8']
    assert (c['path'], c['compile_s'], c['repeats']) == ('eager', 0.0, 5) and isinstance(c['busy'], bool)
    assert 0 <= c['load_before'] <= 1 and 0 <= c['load_after'] <= 1
    assert c['peak_mem_mb'] is None or c['peak_mem_mb'] >= 0
    assert m.training   # mode restored
    assert model_cost(m, 16, batch_sizes=(1,), repeats=1, load_check=0)['busy'] is None   # no load sampled

def test_spread():
    assert spread([5, 1, 4, 2, 3]) == dict(median=3, q1=2, q3=4, min=1, max=5, n=5)
    assert spread([2.0]) == dict(median=2.0, q1=2.0, q3=2.0, min=2.0, max=2.0, n=1)
    with pytest.raises(CellnbError, match="at least one value"): spread([])

def test_flops_convention():
    lin = nn.Sequential(nn.Flatten(), nn.Linear(12, 5))
    assert count_flops(lin, 2) == 2 * 12 * 5 and count_params(lin) == 65

def test_cost_table():
    t = cost_table({'a': (tiny(), 16), 'b': (tiny(), 8)}, batch_sizes=(2,), warmup=0, repeats=1, load_check=0)
    assert list(t.index) == ['a', 'b'] and {'params_m', 'gflops', 'throughput_bs2', 'input_size', 'path'} <= set(t.columns)
    assert t.loc['a', 'gflops'] > t.loc['b', 'gflops'] and list(t.path) == ['eager', 'eager']

def test_bad_inputs():
    with pytest.raises(CellnbError, match="input_size"): model_cost(tiny(), 0)
    with pytest.raises(CellnbError, match="batch_sizes"): model_cost(tiny(), 8, batch_sizes=(1, -2))
    with pytest.raises(CellnbError, match="repeats"): model_cost(tiny(), 8, repeats=0)
    with pytest.raises(CellnbError, match="use one of"): model_cost(tiny(), 8, path='jit')
    with pytest.raises(CellnbError, match="needs device='cuda'"): model_cost(tiny(), 8, path='cuda_graphs')
    with pytest.raises(CellnbError, match="load_check"): model_cost(tiny(), 8, load_check=-1)
    fixed = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2))
    with pytest.raises(CellnbError, match="input_size the model expects"): model_cost(fixed, 16)

def test_compiled_custom_vit_equals_eager_and_the_row_names_the_path():
    "The one torch.compile test on the CPU (inductor, ~30-100 s): custom_vit's logits within atol=rtol=1e-4 of eager's."
    from cellnb.models import create_model
    torch.manual_seed(0)
    x = torch.randn(4, 3, 40, 40)
    net = calibrated(create_model('custom_vit', 4), x)
    fast = CompiledModel(net, 'compiled')
    with torch.inference_mode(): y, ye = fast(x), net(x)
    assert fast.path == 'compiled' and fast.compile_s > 0
    assert ye.std() > 0.01 and torch.allclose(y, ye, atol=1e-4, rtol=1e-4), (y - ye).abs().max()
    c = model_cost(net, 40, batch_sizes=(4,), warmup=1, repeats=2, path='compiled', load_check=0)   # same shape: compiled already
    assert c['path'] == 'compiled' and c['compile_s'] >= 0 and c['latency_ms_per_patch'] > 0

def test_compile_failure_falls_back_to_eager(monkeypatch, capsys):
    def broken(m, **kw):
        def f(x): raise RuntimeError("InductorError: no working C compiler")
        return f
    monkeypatch.setattr(torch, 'compile', broken)
    m = tiny().eval(); x = torch.randn(2, 3, 16, 16)
    c = model_cost(m, 16, batch_sizes=(1, 2), warmup=0, repeats=1, path='compiled', load_check=0)
    err = capsys.readouterr().err.strip().splitlines()
    assert c['path'] == 'eager' and c['compile_s'] == 0
    assert err == ["cellnb: torch.compile failed (RuntimeError: InductorError: no working C compiler); running eager instead (path 'eager')"]
    fast = CompiledModel(m, 'compiled')
    with torch.no_grad(): assert torch.equal(fast(x), m(x)) and fast.path == 'eager'
    with pytest.raises(RuntimeError): fast(torch.randn(2, 5, 16, 16))   # a bad input still fails, with eager's error

@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_graphs_equal_eager_on_cuda():
    from cellnb.models import create_model
    torch.manual_seed(0)
    x = torch.randn(8, 3, 40, 40, device='cuda')
    for a in ('custom_vit', 'cnn'):
        net = calibrated(create_model(a, 4).cuda(), x)
        for path in ('compiled', 'cuda_graphs'):
            fast = CompiledModel(net, path)
            with torch.inference_mode(): ys = [fast(x) for _ in range(3)]; ye = net(x)
            assert fast.path == path and all(torch.allclose(y, ye, atol=1e-3, rtol=1e-3) for y in ys), (a, path)
        c = model_cost(net, 40, batch_sizes=(1, 64), device='cuda', repeats=5, path='cuda_graphs', load_check=0)
        assert c['path'] == 'cuda_graphs' and c['latency_ms_per_patch'] > 0

def test_busy_warning_with_a_simulated_load(capfd):
    "A busy loop on the cores this process may use (a child pinned to the same affinity set) flags the timing busy, with one line."
    hog = subprocess.Popen([sys.executable, '-c', 'while True: pass'])
    try:
        time.sleep(0.5)   # let it start spinning
        c = model_cost(tiny(), 8, batch_sizes=(1,), warmup=0, repeats=5, load_check=0.3)
        assert core_load(0.2)['load'] > BUSY_LOAD
    finally:
        hog.kill(); hog.wait()
    err = capfd.readouterr().err.strip().splitlines()
    assert c['busy'] is True and max(c['load_before'], c['load_after']) > BUSY_LOAD
    assert len(err) == 1 and err[0].startswith("cellnb.cost: warning: core") and "busy with other processes" in err[0]
