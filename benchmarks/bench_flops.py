"""P3: custom_vit training throughput in FLOP/s as a fraction of this machine's dense matmul FLOP/s.

Both measured in this one process: FLOPs of one training step (forward + backward, torch's flop counter) times
steps/s, against the FLOP/s of a large float32 matmul. Prints the fraction last (target >= 0.40 on CPU).
Usage: python benchmarks/bench_flops.py [--bs 128] [--steps 8]
"""
import argparse, time, torch
from torch.utils.flop_counter import FlopCounterMode
from cellnb.cost import FLOP_FORMULAS
from _common import write_result
from cellnb.models import create_model

def matmul_flops(n=2048, reps=10, device="cpu"):
    "Dense float32 matmul FLOP/s (2 n^3 per product), best of `reps`."
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    best = float("inf")
    for _ in range(reps + 2):
        t = time.perf_counter(); a @ b
        if device != "cpu": torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best

def main():
    ap = argparse.ArgumentParser(); ap.add_argument("--bs", type=int, default=128); ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--device", default="cpu"); a = ap.parse_args()
    torch.manual_seed(0)
    m = create_model("custom_vit", 4).to(a.device).train()
    opt = torch.optim.AdamW(m.parameters(), 1e-3)
    x, y = torch.randn(a.bs, 3, 40, 40, device=a.device), torch.randint(0, 4, (a.bs,), device=a.device)
    def step():
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(m(x), y); loss.backward(); opt.step()
    with FlopCounterMode(display=False, custom_mapping=FLOP_FORMULAS) as fc: step()   # groups-aware conv backward
    step_flops = fc.get_total_flops()
    for _ in range(2): step()
    t = time.perf_counter()
    for _ in range(a.steps): step()
    dt = (time.perf_counter() - t) / a.steps
    train_fps = step_flops / dt
    peak = matmul_flops(device=a.device)
    frac = train_fps / peak
    print(f"custom_vit train step: {step_flops/1e9:.2f} GFLOP per batch of {a.bs}, {a.bs/dt:.0f} img/s, {train_fps/1e9:.1f} GFLOP/s")
    print(f"dense matmul peak (2048^2 fp32): {peak/1e9:.1f} GFLOP/s on {torch.get_num_threads()} threads")
    p = write_result("bench_flops", dict(ratio=frac, target=0.40, step_gflops=step_flops/1e9, img_per_s=a.bs/dt,
                                         train_gflops_per_s=train_fps/1e9, matmul_gflops_per_s=peak/1e9, bs=a.bs))
    print(f"wrote {p}")
    print(f"ratio {frac:.3f} (train FLOP/s / matmul FLOP/s, target >= 0.40)")

if __name__ == "__main__": main()
