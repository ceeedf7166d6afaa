"""P3: custom_vit training throughput in FLOP/s as a fraction of this machine's dense matmul FLOP/s.

Both measured in this one process, interleaved: each of --repeats (>= 5) repeats times --steps training steps (forward +
backward + AdamW; FLOPs from torch's flop counter with cellnb.cost.FLOP_FORMULAS) and then the best of a few large
matmuls, so a load that comes and goes hits both; the fraction is reported as the median of the repeats with its IQR
and range. --threads defaults to 1 (pin the process to one core, e.g. `taskset -c 1`). The run is flagged busy (one
warning line) when other processes load the cores this process may run on, before or after it. Prints the fraction last
(target >= 0.5 on CPU). On the CPU it also profiles one step: the share of its time in matmuls, the FLOP/s those reach
against the reference matmul, and the other ops that take the rest (`time_breakdown` in the JSON).
With --bf16 (for a GPU: cellnb trains there under bf16 autocast) the step runs under bf16 autocast and the reference is a
bf16 matmul.
With --compile it also times the step with the model run through torch.compile (inductor, shapes fixed; forward and
backward compiled, AdamW eager), in the same repeats beside the eager step and the matmul: the `compiled` block of the
JSON has its fraction, its speed-up over eager (median of the per-repeat ratios) and the compilation time, which stays
out of the timed region. The headline `ratio` stays the eager one.
Usage: taskset -c 1 python benchmarks/performance/bench_flops.py [--bs 128] [--steps 2] [--repeats 5] [--compile] [--device cuda --bf16]
"""
import argparse, contextlib, sys, time, torch
from torch.utils.flop_counter import FlopCounterMode
from cellnb.cost import FLOP_FORMULAS, spread, core_load, busy_warning
import sys as _sys, pathlib as _pl; _sys.path[:0] = [str(_pl.Path(__file__).resolve().parents[1]), str(_pl.Path(__file__).resolve().parents[1] / "crchisto_study")]   # _common, the study scripts
from _common import write_result
from cellnb.models import create_model

def matmul_flops(n=2048, reps=5, device="cpu", dtype=torch.float32):
    "Dense matmul FLOP/s (2 n^3 per product) in `dtype`, best of `reps` after two untimed."
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for i in range(reps + 2):
        t = time.perf_counter(); a @ b
        if device != "cpu": torch.cuda.synchronize()
        if i >= 2: best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best

def make_step(model, opt, x, y, amp=contextlib.nullcontext):
    "One training step of `model` on the batch (`x`, `y`): forward under `amp`, cross-entropy, backward, `opt.step()`."
    def step():
        opt.zero_grad(set_to_none=True)
        with amp(): loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        loss.backward(); opt.step()
        return loss.detach()
    return step

def compiled_step(model, opt, x, y, amp=contextlib.nullcontext):
    """The training step of `make_step` with `model` run through torch.compile (inductor, static shapes), and the seconds
    its first call took (compilation of forward and backward, plus one step). The parameters are `model`'s own, so it
    trains the same weights as the eager step. Returns (step, compile_seconds)."""
    step = make_step(torch.compile(model, dynamic=False), opt, x, y, amp)
    t = time.perf_counter(); step()
    if x.device.type == "cuda": torch.cuda.synchronize()
    return step, time.perf_counter() - t

MATMULS = ("aten::mm", "aten::addmm", "aten::bmm")

def time_breakdown(step, reference_flops: float, top: int = 6, n: int = 1) -> dict:
    """Where `n` CPU training steps' time goes (torch.profiler, self CPU time per op): the share spent in matmuls, the
    FLOP/s those matmuls reach as a fraction of `reference_flops` (the dense matmul measured in the same run), the share
    in attention (scaled_dot_product_attention's kernels, forward and backward: matmul-like work torch runs as its own
    op), and the `top` other ops by their share. It says whether a low FLOP fraction is slow matmuls or time outside them."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], with_flops=True) as prof:
        for _ in range(n): step()
    ops = [(e.key, e.self_cpu_time_total / 1e6, e.flops or 0) for e in prof.key_averages()]
    total = sum(t for _, t, _ in ops)
    is_attn = lambda k: "scaled_dot_product" in k
    mm_t, mm_f = sum(t for k, t, _ in ops if k in MATMULS), sum(f for k, _, f in ops if k in MATMULS)
    rest = sorted(((k, t) for k, t, _ in ops if k not in MATMULS and not is_attn(k)), key=lambda x: -x[1])[:top]
    return dict(matmul_share_of_time=mm_t / total, matmul_rate_over_reference=(mm_f / mm_t) / reference_flops if mm_t else None,
                attention_share_of_time=sum(t for k, t, _ in ops if is_attn(k)) / total,
                other_ops_share={k: t / total for k, t in rest}, profiled_seconds=total)

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0]); ap.add_argument("--bs", type=int, default=128)
    ap.add_argument("--steps", type=int, default=2, help="training steps timed per repeat"); ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default 1)")
    ap.add_argument("--device", default="cpu"); ap.add_argument("--bf16", action="store_true", help="bf16 autocast step, bf16 matmul")
    ap.add_argument("--compile", action="store_true", help="also time the step with the model through torch.compile, side by side")
    ap.add_argument("--note", default="", help="what else ran on the machine, recorded in the result")
    a = ap.parse_args()
    if a.repeats < 5: sys.exit("bench_flops.py: --repeats must be >= 5 (the spread needs them)")
    if a.device == "cpu" or a.threads: torch.set_num_threads(a.threads or 1)
    amp = (lambda: torch.autocast(torch.device(a.device).type, dtype=torch.bfloat16)) if a.bf16 else contextlib.nullcontext
    torch.manual_seed(0)
    m = create_model("custom_vit", 4).to(a.device).train()
    opt = torch.optim.AdamW(m.parameters(), 1e-3)
    x, y = torch.randn(a.bs, 3, 40, 40, device=a.device), torch.randint(0, 4, (a.bs,), device=a.device)
    step = make_step(m, opt, x, y, amp)
    with FlopCounterMode(display=False, custom_mapping=FLOP_FORMULAS) as fc: step()   # groups-aware conv backward
    step_flops = fc.get_total_flops()
    sync = torch.cuda.synchronize if a.device.startswith("cuda") else (lambda: None)   # CUDA: time the work, not the launches
    n = 8192 if a.device.startswith("cuda") else 2048   # a GPU needs a larger product to reach its peak
    mm_dtype = torch.bfloat16 if a.bf16 else torch.float32
    for _ in range(2): step()
    if a.compile:
        print("compiling the training step (torch.compile, inductor)...", flush=True)
        cstep, compile_s = compiled_step(m, opt, x, y, amp)
        cstep(); print(f"compiled in {compile_s:.0f} s", flush=True)
    def rate(fn):   # FLOP/s of a.steps calls of fn
        sync(); t = time.perf_counter()
        for _ in range(a.steps): fn()
        sync(); return step_flops * a.steps / (time.perf_counter() - t)
    start = core_load(1.0)
    train, ctrain, peak = [], [], []
    for _ in range(a.repeats):
        train.append(rate(step))
        if a.compile: ctrain.append(rate(cstep))
        peak.append(matmul_flops(n, device=a.device, dtype=mm_dtype))
    brk = time_breakdown(step, spread(peak)["median"]) if a.device == "cpu" else None   # on a GPU self CPU time is launch time: profile_gpu.py
    end = core_load(1.0)   # after the profiled step too: the busy check covers it
    busy = busy_warning(start, end, "the benchmark")
    frac = spread([t / p for t, p in zip(train, peak)])
    tr, pk = spread([t / 1e9 for t in train]), spread([p / 1e9 for p in peak])
    comp = None
    if a.compile:
        cfrac, ctr = spread([t / p for t, p in zip(ctrain, peak)]), spread([t / 1e9 for t in ctrain])
        comp = dict(ratio=cfrac["median"], ratio_spread=cfrac, train_gflops_per_s=ctr["median"], train_gflops_per_s_spread=ctr,
                    img_per_s=a.bs * ctr["median"] * 1e9 / step_flops, speedup_over_eager=spread([c / e for c, e in zip(ctrain, train)]),
                    compile_s=compile_s, path="compiled (torch.compile, inductor; forward and backward, AdamW eager)")
    outside = {str(i): dict(start=start["percpu"][i], end=end["percpu"][i]) for i in range(len(start["percpu"])) if i not in start["cores"]}
    print(f"custom_vit train step: {step_flops/1e9:.2f} GFLOP per batch of {a.bs}, {a.bs * tr['median'] * 1e9 / step_flops:.1f} img/s, "
          f"{tr['median']:.1f} GFLOP/s [IQR {tr['q1']:.1f}-{tr['q3']:.1f}]")
    print(f"dense matmul ({n}^2 {'bf16' if a.bf16 else 'fp32'}): {pk['median']:.1f} GFLOP/s [IQR {pk['q1']:.1f}-{pk['q3']:.1f}] on {a.device}, "
          f"{torch.get_num_threads()} threads")
    p = write_result("bench_flops", dict(ratio=frac["median"], target=0.5, ratio_spread=frac, step_gflops=step_flops/1e9,
                                         img_per_s=a.bs * tr["median"] * 1e9 / step_flops, train_gflops_per_s=tr["median"],
                                         matmul_gflops_per_s=pk["median"], train_gflops_per_s_spread=tr, matmul_gflops_per_s_spread=pk,
                                         bs=a.bs, steps=a.steps, repeats=a.repeats, threads=torch.get_num_threads(),
                                         device=a.device, precision="bf16-autocast" if a.bf16 else "fp32", matmul_n=n,
                                         busy=busy, affinity=start["cores"], load_start=start["load"], load_end=end["load"],
                                         cores_outside_affinity=outside, time_breakdown=brk, compiled=comp, note=a.note or None))
    if brk: print(f"where the step's time goes: matmuls {brk['matmul_share_of_time']:.0%} of it, at {brk['matmul_rate_over_reference']:.2f} of the "
                  f"reference matmul's FLOP/s; attention {brk['attention_share_of_time']:.0%}; then " + ", ".join(f"{k.removeprefix('aten::')} {v:.0%}" for k, v in brk["other_ops_share"].items()))
    if comp: print(f"compiled step: {comp['train_gflops_per_s']:.1f} GFLOP/s, {comp['img_per_s']:.1f} img/s, "
                   f"{comp['speedup_over_eager']['median']:.2f}x eager [IQR {comp['speedup_over_eager']['q1']:.2f}-{comp['speedup_over_eager']['q3']:.2f}], "
                   f"ratio {cfrac['median']:.3f} [IQR {cfrac['q1']:.3f}-{cfrac['q3']:.3f}] (compiled in {compile_s:.0f} s)")
    print(f"wrote {p}")
    print(f"ratio {frac['median']:.3f} [IQR {frac['q1']:.3f}-{frac['q3']:.3f}, range {frac['min']:.3f}-{frac['max']:.3f}, {a.repeats} repeats] "
          f"(train FLOP/s / matmul FLOP/s, target >= 0.5){'  BUSY' if busy else ''}")

if __name__ == "__main__": main()
