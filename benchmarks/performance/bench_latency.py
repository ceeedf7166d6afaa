"""P2: inference latency per patch of custom_vit at 40 px against the foundation architectures at 224 px.

Random weights (cost does not depend on them), built as cellnb.foundation builds the backbones. Batch 1 and a larger
batch, each the median of --repeats (>= 5) timed passes after warm-up with its IQR, on --threads threads (default 1: pin
the process to one core, e.g. `taskset -c 1`), all measured side by side in this one process. custom_vit is also timed
on the fast path (--compile: torch.compile; on CUDA with CUDA graphs), compilation done before the timed passes. Every
model's timing is flagged busy (one warning line) when other processes load the cores this process may run on; the
cores outside that set are recorded too. Prints the custom_vit/UNI and custom_vit/ResNet-RS50 speed ratios last.
With --study it times instead the nine models of the CRCHisto study (the eight 40-px architectures and EfficientNet-Lite0
at 224 px, whose probe and fine-tuned variants cost the same per patch) on a fixed thread count, and writes
bench_latency_study.json: the latencies of the study's speed-accuracy figure.
Usage: taskset -c 1 python benchmarks/performance/bench_latency.py [--device cpu|cuda] [--big-batch 16] [--repeats 5]
       [--compile custom_vit] [--note TEXT] | [--study --threads 1 --repeats 20]
"""
import argparse, sys, torch
import sys as _sys, pathlib as _pl; _sys.path[:0] = [str(_pl.Path(__file__).resolve().parents[1]), str(_pl.Path(__file__).resolve().parents[1] / "crchisto_study")]   # _common, the study scripts
from _common import write_result
from cellnb.models import create_model, ARCHS
from cellnb.foundation import build_resnetrs50, build_ctranspath, build_uni
from cellnb.cost import model_cost, core_load, busy_warning

def study(a, big):
    "The study's nine models, side by side on `a.threads` threads: median of `a.repeats` timed passes per batch size."
    from cellnb.foundation import build_effnet_lite0
    torch.manual_seed(0)
    models = {m: (create_model(m, 4), 40) for m in ARCHS} | {"effnet_lite0_in1k": (build_effnet_lite0(), 224)}
    rows = {}
    for name, (m, size) in models.items():
        c = model_cost(m, size, batch_sizes=(1, big), device=a.device, warmup=3, repeats=a.repeats, threads=a.threads)
        rows[name] = {**{k: c[k] for k in c if not isinstance(c[k], dict)}, "input_px": size}
        print(f"{name:20s} {size:4d}px  bs1 {c['latency_ms_per_patch']:8.3f} ms/patch  bs{big} {c[f'latency_ms_per_patch_bs{big}']:8.3f} ms/patch", flush=True)
    print(f"wrote {write_result('bench_latency_study', dict(device=a.device, threads=a.threads, repeats=a.repeats, big_batch=big, models=rows))}")

def ratio(slow, fast, b) -> dict:
    "How many times faster `fast` is than `slow` per patch at batch `b`: the ratio of medians, and the range the IQRs allow."
    k = lambda q: f"latency_{q}_ms_per_patch_bs{b}" if q else f"latency_ms_per_patch_bs{b}"
    return dict(median=slow[k(None)] / fast[k(None)], low=slow[k("q1")] / fast[k("q3")], high=slow[k("q3")] / fast[k("q1")])

def show(key, c, big):
    iqr = lambda b: f"[IQR {c[f'latency_q1_ms_per_patch_bs{b}']:.3f}-{c[f'latency_q3_ms_per_patch_bs{b}']:.3f}]"
    extra = (f"  compiled in {c['compile_s']:.0f} s" if c["path"] != "eager" else "") + ("  BUSY" if c["busy"] else "")
    print(f"{key:34s} {c['input_px']:4d}px  GFLOPs {c['gflops']:8.3f}  bs1 {c['latency_ms_per_patch']:9.3f} ms/patch {iqr(1)}  "
          f"bs{big} {c[f'latency_ms_per_patch_bs{big}']:9.3f} {iqr(big)}{extra}", flush=True)

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0]); ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--big-batch", type=int, default=None); ap.add_argument("--study", action="store_true")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: 1 for P2, torch's setting for --study)")
    ap.add_argument("--repeats", type=int, default=None, help="timed passes per model and batch size (default 5, at least 5; 20 with --study)")
    ap.add_argument("--compile", default="custom_vit", metavar="MODELS",
                    help="comma-separated models also timed on the fast path (torch.compile; with CUDA graphs on CUDA); '' for none")
    ap.add_argument("--note", default="", help="what else ran on the machine, recorded in the result")
    a = ap.parse_args()
    on_gpu = a.device.startswith("cuda")
    big = a.big_batch or (256 if on_gpu else 16)
    if a.study: a.repeats = a.repeats or 20; return study(a, big)
    a.repeats, a.threads = a.repeats or 5, a.threads or 1
    if a.repeats < 5: sys.exit("bench_latency.py: --repeats must be >= 5 (the spread needs them)")
    fast_path = "cuda_graphs" if on_gpu else "compiled"
    cv, rs, uni = "custom_vit", "resnetrs50", "uni (vit_large_patch16)"
    torch.manual_seed(0)
    models = {cv: (create_model("custom_vit", 4), 40), rs: (build_resnetrs50(), 224),
              "ctranspath (swin_tiny)": (build_ctranspath(), 224), uni: (build_uni(), 224)}
    compiled = [m.strip() for m in a.compile.split(",") if m.strip()]
    if (bad := [m for m in compiled if m not in models]): sys.exit(f"bench_latency.py: --compile {','.join(bad)}: use names among {list(models)}")
    torch.set_num_threads(a.threads)
    start, rows = core_load(1.0), {}
    for name, (m, size) in models.items():
        for path in ["eager"] + ([fast_path] if name in compiled else []):
            c = model_cost(m, size, batch_sizes=(1, big), device=a.device, warmup=2, repeats=a.repeats, threads=a.threads, path=path,
                           dtype=torch.bfloat16 if on_gpu else None)   # as cellnb predicts there: bf16 autocast on CUDA, fp32 on CPU
            key = name if path == "eager" else f"{name} ({c['path']})"   # a compilation that failed and ran eager says so
            rows[key] = {**c, "input_px": size}
            show(key, rows[key], big)
    end = core_load(1.0)
    fast = f"{cv} ({fast_path})" if f"{cv} ({fast_path})" in rows else None
    speed = lambda other: {p: {bk: ratio(rows[other], rows[k], b) for bk, b in (("bs1", 1), ("big", big))}
                           for p, k in (("eager", cv), (fast_path, fast)) if k}
    vs_uni, vs_rs = speed(uni), speed(rs)
    outside = {str(i): dict(start=start["percpu"][i], end=end["percpu"][i]) for i in range(len(start["percpu"])) if i not in start["cores"]}
    busy = busy_warning(start, end, "the benchmark") or any(r["busy"] for r in rows.values())
    p = write_result("bench_latency", dict(
        ratio=min(vs_uni["eager"]["bs1"]["median"], vs_uni["eager"]["big"]["median"]), target=100,
        ratio_vs_resnetrs50=min(vs_rs["eager"]["bs1"]["median"], vs_rs["eager"]["big"]["median"]), target_vs_resnetrs50=10,
        fast_path=fast_path if fast else None,   # custom_vit on it, the other models eager
        ratio_fast_path=vs_uni[fast_path]["bs1"]["median"] if fast else None,
        ratio_vs_resnetrs50_fast_path=vs_rs[fast_path]["bs1"]["median"] if fast else None,
        device=a.device, precision="bf16-autocast" if on_gpu else "fp32", threads=a.threads, repeats=a.repeats, big_batch=big,
        spread="IQR of the repeats; a ratio's low and high pair the two models' opposite quartiles",
        busy=busy, affinity=start["cores"], load_start=start["load"], load_end=end["load"], cores_outside_affinity=outside,
        note=a.note or None, models=rows, speedup_vs_uni=vs_uni, speedup_vs_resnetrs50=vs_rs))
    print(f"wrote {p}")
    for other, r, tgt in (("ResNet-RS50", vs_rs, 10), ("UNI (ViT-L/16)", vs_uni, 100)):
        for path, d in r.items():
            print(f"custom_vit ({path}) vs {other} (eager): " + ", ".join(
                  f"{d[bk]['median']:.1f}x [{d[bk]['low']:.1f}-{d[bk]['high']:.1f}] at {lbl}" for bk, lbl in (("bs1", "bs1"), ("big", f"bs{big}")))
                  + f"  (target >= {tgt}x at bs1)")
    if busy: print("the cores this run used were busy: these are not a quiet machine's figures")

if __name__ == "__main__": main()
