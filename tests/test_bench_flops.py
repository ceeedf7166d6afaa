"benchmarks/performance/bench_flops.py's time breakdown: which share of a training step is matmuls, and how fast they run."
import importlib.util, json, os, subprocess, sys
from pathlib import Path
import pytest, torch

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "performance" / "bench_flops.py"

def _module():
    spec = importlib.util.spec_from_file_location("bench_flops", SCRIPT)
    m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); return m

def test_time_breakdown_tells_matmul_time_from_the_rest():
    bf = _module()
    threads = torch.get_num_threads(); torch.set_num_threads(1)
    try:
        a, b, x = torch.randn(256, 256), torch.randn(256, 256), torch.randn(2_000_000)
        q = torch.randn(2, 3, 100, 32)
        ref = bf.matmul_flops(256, reps=20)
        only_mm = bf.time_breakdown(lambda: a @ b, reference_flops=ref, n=50)   # 50 products: one preemption does not decide it
        assert only_mm["matmul_share_of_time"] > 0.8                      # the rest is dispatch (aten::matmul's own overhead)
        assert only_mm["attention_share_of_time"] == 0
        assert 0.1 < only_mm["matmul_rate_over_reference"] < 10           # the same product as the reference: about its rate
        mixed = bf.time_breakdown(lambda: (a @ b, x.exp().sin(), torch.nn.functional.scaled_dot_product_attention(q, q, q)),
                                  reference_flops=ref, n=3)
        assert mixed["matmul_share_of_time"] < 0.5                        # two elementwise passes over 2M values dwarf one 256^2 product
        assert mixed["attention_share_of_time"] > 0 and not any("scaled_dot_product" in k for k in mixed["other_ops_share"])
        assert {"aten::exp", "aten::sin"} <= set(mixed["other_ops_share"])
    finally: torch.set_num_threads(threads)

def test_bench_flops_records_the_breakdown(tmp_path):
    env = {**os.environ, "CELLNB_RESULTS_DIR": str(tmp_path)}
    r = subprocess.run([sys.executable, str(SCRIPT), "--bs", "8", "--steps", "1", "--repeats", "5"], capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr
    d = json.loads((tmp_path / "bench_flops.json").read_text())
    brk = d["time_breakdown"]
    assert 0 < brk["matmul_share_of_time"] < 1 and brk["matmul_rate_over_reference"] > 0
    assert brk["attention_share_of_time"] > 0                            # custom_vit's attention runs as its own kernels
    assert "where the step's time goes: matmuls" in r.stdout

def test_compiled_step_trains_like_the_eager_one():
    "bench_flops --compile times the same step through torch.compile: from equal weights it gives the eager step's loss and update."
    import copy
    bf = _module()
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.GELU(), torch.nn.Flatten(), torch.nn.Linear(8 * 6 * 6, 4))
    m2, w0 = copy.deepcopy(m), m[0].weight.detach().clone()
    x, y = torch.randn(16, 3, 8, 8), torch.randint(0, 4, (16,))
    eager = bf.make_step(m, torch.optim.AdamW(m.parameters(), 1e-2), x, y)
    cstep, secs = bf.compiled_step(m2, torch.optim.AdamW(m2.parameters(), 1e-2), x, y)   # its first call is step 1
    eager(); l1 = eager(); l2 = cstep()                                                   # step 2 of each
    assert secs > 0 and torch.allclose(l1, l2, atol=1e-5)
    for p, q in zip(m.parameters(), m2.parameters()): assert torch.allclose(p, q, atol=1e-5)
    assert not torch.allclose(m2[0].weight, w0, atol=1e-3)                                # and both did train
