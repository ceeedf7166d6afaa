import pytest, torch, torch.nn as nn
from cellnb.core import CellnbError
from cellnb.cost import model_cost, cost_table, count_flops, count_params

def tiny():
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))

def test_model_cost_keys_and_values():
    m = tiny()
    c = model_cost(m, 16, batch_sizes=(1, 8), warmup=1, repeats=2)
    assert set(c) == {'params', 'gflops', 'latency_ms_per_patch', 'latency_ms_per_patch_bs1', 'latency_ms_per_patch_bs8',
                      'throughput_bs1', 'throughput_bs8', 'peak_mem_mb'}
    assert c['params'] == 3 * 4 * 9 + 4 + 4 * 2 + 2
    assert c['gflops'] == pytest.approx(2 * (3 * 9 * 4 * 16 * 16 + 4 * 2) / 1e9)
    assert c['latency_ms_per_patch'] == c['latency_ms_per_patch_bs1'] > 0
    assert c['throughput_bs8'] == pytest.approx(1000 / c['latency_ms_per_patch_bs8'])
    assert c['peak_mem_mb'] is None or c['peak_mem_mb'] >= 0
    assert m.training   # mode restored

def test_flops_convention():
    lin = nn.Sequential(nn.Flatten(), nn.Linear(12, 5))
    assert count_flops(lin, 2) == 2 * 12 * 5 and count_params(lin) == 65

def test_cost_table():
    t = cost_table({'a': (tiny(), 16), 'b': (tiny(), 8)}, batch_sizes=(2,), warmup=0, repeats=1)
    assert list(t.index) == ['a', 'b'] and {'params_m', 'gflops', 'throughput_bs2', 'input_size'} <= set(t.columns)
    assert t.loc['a', 'gflops'] > t.loc['b', 'gflops']

def test_bad_inputs():
    with pytest.raises(CellnbError, match="input_size"): model_cost(tiny(), 0)
    with pytest.raises(CellnbError, match="batch_sizes"): model_cost(tiny(), 8, batch_sizes=(1, -2))
    with pytest.raises(CellnbError, match="repeats"): model_cost(tiny(), 8, repeats=0)
    fixed = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2))
    with pytest.raises(CellnbError, match="input_size the model expects"): model_cost(fixed, 16)
