"""Where custom_vit's time goes on a GPU: kernel launches, GPU busy time and CUDA-graph replay, side by side.

On one H200 (results in benchmarks/results/) custom_vit missed P2 (bench_latency_h200.json: 2.6x faster than UNI's
ViT-L/16 at batch 1, 18.9x at batch 256; target 100x) and P3 (bench_flops_h200.json: its training step used 2% of the
bf16 matmul peak), and fit_cell_model trained it at a fifth of the bare step's speed (gpu_train_h200.json: 2,036 img/s
at batch 256, against the bare step's 11,445 in bench_flops_h200.json). This script measures, per model and batch, under bf16 autocast:
- a forward pass: its latency, the kernels it launches, and the GPU's busy fraction (summed kernel time over wall time,
  from torch.profiler); a low fraction means the GPU waits on the CPU (launch-bound), not on arithmetic;
- the same pass replayed as one CUDA graph: the latency left once launch cost is gone;
- custom_vit's training step (P3's step) with the optimizer cellnb trains with (fastai's Adam, a Python loop over
  the parameters) against torch's AdamW with foreach and with fused kernels.
--device cpu runs the eager and profiler parts at toy sizes, a check of the script (no graphs, no GPU figures).
Usage: python benchmarks/performance/profile_gpu.py [--device cuda] [--batches 1,256,1024,4096]
Writes benchmarks/results/profile_gpu.json after every row (on a lent GPU, $CELLNB_RESULTS_DIR: tools/gpu_check.sh).
"""
import argparse, timm, torch
from torch.autograd import DeviceType
from torch.profiler import profile, ProfilerActivity
import sys as _sys, pathlib as _pl; _sys.path[:0] = [str(_pl.Path(__file__).resolve().parents[1]), str(_pl.Path(__file__).resolve().parents[1] / "crchisto_study")]   # _common, the study scripts
from _common import write_result
from cellnb.models import create_model
from cellnb.cost import _seconds, spread
import cellnb.train   # noqa: F401  imports fastai with its torch.jit.script notice hidden
from fastai.optimizer import Adam

def _profile(fn, sync, n, on_gpu) -> dict:
    "Per call: kernels launched, summed kernel ms, and the top 5 ops by device (CPU: self CPU) time."
    fn(); sync()
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])) as prof:
        for _ in range(n): fn()
        sync()
    avg = prof.key_averages()
    if not on_gpu:
        top = sorted(avg, key=lambda e: -e.self_cpu_time_total)[:5]
        return dict(top=[[e.key[:70], round(e.self_cpu_time_total / n / 1000, 4)] for e in top])
    kernels = [e for e in prof.events() if e.device_type == DeviceType.CUDA]
    top = sorted(avg, key=lambda e: -e.self_device_time_total)[:5]
    return dict(kernels=len(kernels) / n, kernel_ms=sum(e.time_range.elapsed_us() for e in kernels) / n / 1000,
                top=[[e.key[:70], round(e.self_device_time_total / n / 1000, 4)] for e in top])

def _graph(fn):
    "`fn` captured as one CUDA graph after a warm-up on a side stream; returns its replay."
    s = torch.cuda.Stream(); s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3): fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g): fn()
    return g.replay

def forward_rows(models, batches, dev, repeats, rows, save):
    "Fill `rows` with each model's forward passes, calling `save()` after each row (a step cut off at its limit keeps them)."
    on_gpu = dev.type == "cuda"
    sync = torch.cuda.synchronize if on_gpu else (lambda: None)
    for name, (m, size, bss) in models.items():
        m = m.to(dev).eval()
        for b in [b for b in batches if b in bss]:
            x = torch.randn(b, 3, size, size, device=dev)
            def fwd():
                with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=on_gpu, cache_enabled=False): m(x)
            r = dict(ms=1000 * spread(_seconds(fwd, dev, 3, repeats))["median"], **_profile(fwd, sync, 3, on_gpu))
            if on_gpu:
                r["busy"] = r["kernel_ms"] / r["ms"]
                try: r["graph_ms"] = 1000 * spread(_seconds(_graph(fwd), dev, 3, repeats))["median"]
                except RuntimeError as e: r["graph_ms"], r["graph_error"] = None, str(e).splitlines()[0][:200]
            r["ms_per_patch"] = r["ms"] / b
            rows[f"{name}/bs{b}"] = r; save()
            print(f"{name:12s} bs{b:<5d} {r['ms']:9.3f} ms  {r['ms_per_patch']:8.4f} ms/patch" +
                  (f"  kernels {r['kernels']:6.0f}  busy {r['busy']:5.1%}  " + (f"graph {r['graph_ms']:9.3f} ms" if r["graph_ms"] is not None
                   else f"graph capture failed: {r['graph_error']}") if on_gpu else ""), flush=True)
            del x
        m.cpu()

def train_rows(bs, dev, repeats, rows, save):
    "P3's step (custom_vit, cross-entropy, bf16 autocast on CUDA) with each optimizer, into `rows`, saved after each."
    on_gpu = dev.type == "cuda"
    sync = torch.cuda.synchronize if on_gpu else (lambda: None)
    torch.manual_seed(0)
    m = create_model("custom_vit", 4).to(dev).train()
    x, y = torch.randn(bs, 3, 40, 40, device=dev), torch.randint(0, 4, (bs,), device=dev)
    opts = {"fastai Adam (cellnb)": lambda p: Adam(p, lr=1e-3, decouple_wd=True),
            "torch AdamW foreach": lambda p: torch.optim.AdamW(p, 1e-3, foreach=True)}
    if on_gpu: opts["torch AdamW fused"] = lambda p: torch.optim.AdamW(p, 1e-3, fused=True)
    for name, make in opts.items():
        opt = make(list(m.parameters()))
        def step():
            opt.zero_grad()
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=on_gpu):
                loss = torch.nn.functional.cross_entropy(m(x).float(), y)
            loss.backward(); opt.step()
        r = dict(ms=1000 * spread(_seconds(step, dev, 2, repeats))["median"], **_profile(step, sync, 2, on_gpu))
        r["img_per_s"] = bs / r["ms"] * 1000
        if on_gpu: r["busy"] = r["kernel_ms"] / r["ms"]
        rows[name] = r; save()
        print(f"train step bs{bs} {name:22s} {r['ms']:9.3f} ms  {r['img_per_s']:9.0f} img/s" +
              (f"  kernels {r['kernels']:6.0f}  busy {r['busy']:5.1%}" if on_gpu else ""), flush=True)

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batches", default=None, help="comma-separated forward batch sizes (default 1,256,1024,4096 on CUDA, 1,8 on CPU)")
    ap.add_argument("--train-bs", type=int, default=None, help="training-step batch (default 256 on CUDA, 8 on CPU)")
    a = ap.parse_args()
    dev = torch.device(a.device)
    on_gpu = dev.type == "cuda"
    if on_gpu and not torch.cuda.is_available(): raise SystemExit("profile_gpu: --device cuda but torch sees no GPU; use --device cpu for a check of the script")
    try: batches = [int(b) for b in (a.batches or ("1,256,1024,4096" if on_gpu else "1,8")).split(",")]
    except ValueError: raise SystemExit(f"profile_gpu: --batches {a.batches!r} must be comma-separated integers, e.g. 1,256") from None
    uni = timm.create_model("vit_large_patch16_224" if on_gpu else "vit_tiny_patch16_224", pretrained=False, num_classes=0)
    models = {"custom_vit": (create_model("custom_vit", 4), 40, batches),
              "uni" if on_gpu else "vit_tiny": (uni, 224, [b for b in batches if b <= 256])}   # ViT-L at 4096 x 224 px: 1 GB of input, P2 stops at 256
    repeats = 20 if on_gpu else 2
    out = dict(device=str(dev), gpu=torch.cuda.get_device_name(dev) if on_gpu else None,
               precision="bf16-autocast" if on_gpu else "fp32", forward={}, train_step={})
    save = lambda: write_result("profile_gpu", out)   # after every row: a run cut off at its time limit keeps what it measured
    forward_rows(models, batches, dev, repeats, out["forward"], save)
    train_rows(a.train_bs or (256 if on_gpu else 8), dev, 10 if on_gpu else 2, out["train_step"], save)
    print(f"wrote {save()}")

if __name__ == "__main__": main()
