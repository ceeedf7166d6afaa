"""P3: custom_vit training throughput in FLOP/s as a fraction of this machine's dense matmul FLOP/s.

Both measured in this one process: FLOPs of one training step (forward + backward, torch's flop counter) times
steps/s, against the FLOP/s of a large float32 matmul. Prints the fraction last (target >= 0.40 on CPU).
With --bf16 (for a GPU: cellnb trains there under bf16 autocast) the step runs under bf16 autocast and the reference is a
bf16 matmul.
Usage: python benchmarks/performance/bench_flops.py [--bs 128] [--steps 8] [--device cuda --bf16]
"""
import argparse, contextlib, time, torch
from torch.utils.flop_counter import FlopCounterMode
from cellnb.cost import FLOP_FORMULAS
import sys as _sys, pathlib as _pl; _sys.path[:0] = [str(_pl.Path(__file__).resolve().parents[1]), str(_pl.Path(__file__).resolve().parents[1] / "crchisto_study")]   # _common, the study scripts
from _common import write_result
from cellnb.models import create_model

def matmul_flops(n=2048, reps=10, device="cpu", dtype=torch.float32):
    "Dense matmul FLOP/s (2 n^3 per product) in `dtype`, best of `reps`."
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(reps + 2):
        t = time.perf_counter(); a @ b
        if device != "cpu": torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best

def main():
    ap = argparse.ArgumentParser(); ap.add_argument("--bs", type=int, default=128); ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--device", default="cpu"); ap.add_argument("--bf16", action="store_true", help="bf16 autocast step, bf16 matmul")
    a = ap.parse_args()
    amp = (lambda: torch.autocast(torch.device(a.device).type, dtype=torch.bfloat16)) if a.bf16 else contextlib.nullcontext
    torch.manual_seed(0)
    m = create_model("custom_vit", 4).to(a.device).train()
    opt = torch.optim.AdamW(m.parameters(), 1e-3)
    x, y = torch.randn(a.bs, 3, 40, 40, device=a.device), torch.randint(0, 4, (a.bs,), device=a.device)
    def step():
        opt.zero_grad(set_to_none=True)
        with amp(): loss = torch.nn.functional.cross_entropy(m(x).float(), y)
        loss.backward(); opt.step()
    with FlopCounterMode(display=False, custom_mapping=FLOP_FORMULAS) as fc: step()   # groups-aware conv backward
    step_flops = fc.get_total_flops()
    sync = torch.cuda.synchronize if a.device.startswith("cuda") else (lambda: None)   # CUDA: time the work, not the launches
    for _ in range(2): step()
    sync(); t = time.perf_counter()
    for _ in range(a.steps): step()
    sync(); dt = (time.perf_counter() - t) / a.steps
    train_fps = step_flops / dt
    n = 8192 if a.device.startswith("cuda") else 2048   # a GPU needs a larger product to reach its peak
    peak = matmul_flops(n, device=a.device, dtype=torch.bfloat16 if a.bf16 else torch.float32)
    frac = train_fps / peak
    print(f"custom_vit train step: {step_flops/1e9:.2f} GFLOP per batch of {a.bs}, {a.bs/dt:.0f} img/s, {train_fps/1e9:.1f} GFLOP/s")
    print(f"dense matmul peak ({n}^2 {'bf16' if a.bf16 else 'fp32'}): {peak/1e9:.1f} GFLOP/s on {a.device}, {torch.get_num_threads()} threads")
    p = write_result("bench_flops", dict(ratio=frac, target=0.40, step_gflops=step_flops/1e9, img_per_s=a.bs/dt,
                                         train_gflops_per_s=train_fps/1e9, matmul_gflops_per_s=peak/1e9, bs=a.bs,
                                         device=a.device, precision="bf16-autocast" if a.bf16 else "fp32", matmul_n=n))
    print(f"wrote {p}")
    print(f"ratio {frac:.3f} (train FLOP/s / matmul FLOP/s, target >= 0.40)")

if __name__ == "__main__": main()
