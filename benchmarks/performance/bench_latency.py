"""P2: inference latency per patch of custom_vit at 40 px against the foundation architectures at 224 px.

Random weights (cost does not depend on them). Batch 1 and a large batch, median of repeats after warm-up, all
measured side by side in this one process. Prints the custom_vit/UNI and custom_vit/ResNet-RS50 speed ratios last.
With --study it times instead the nine models of the CRCHisto study (the eight 40-px architectures and EfficientNet-Lite0
at 224 px, whose probe and fine-tuned variants cost the same per patch) on a fixed thread count, and writes
bench_latency_study.json: the latencies of the study's speed-accuracy figure.
Usage: python benchmarks/performance/bench_latency.py [--device cpu|cuda] [--big-batch 256] [--study --threads 1 --repeats 20]
"""
import argparse, timm, torch
import sys as _sys, pathlib as _pl; _sys.path[:0] = [str(_pl.Path(__file__).resolve().parents[1]), str(_pl.Path(__file__).resolve().parents[1] / "crchisto_study")]   # _common, the study scripts
from _common import write_result
from cellnb.models import create_model, ARCHS
from cellnb.cost import model_cost

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

def main():
    ap = argparse.ArgumentParser(); ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--big-batch", type=int, default=None); ap.add_argument("--study", action="store_true")
    ap.add_argument("--threads", type=int, default=None); ap.add_argument("--repeats", type=int, default=20); a = ap.parse_args()
    on_gpu = a.device.startswith("cuda")
    big = a.big_batch or (256 if on_gpu else 32)
    if a.study: return study(a, big)
    models = {"custom_vit": (create_model("custom_vit", 4), 40),
              "resnetrs50": (timm.create_model("resnetrs50", pretrained=False, num_classes=0), 224),
              "ctranspath (swin_tiny)": (timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, num_classes=0), 224),
              "uni (vit_large_patch16)": (timm.create_model("vit_large_patch16_224", pretrained=False, num_classes=0, init_values=1e-5), 224)}
    rows = {}
    for name, (m, size) in models.items():
        c = model_cost(m, size, batch_sizes=(1, big), device=a.device, warmup=2 if on_gpu else 1, repeats=10 if on_gpu else 2,  # CPU: fits in 5 min
                       dtype=torch.bfloat16 if on_gpu else None)   # as cellnb predicts there: bf16 autocast on CUDA, fp32 on CPU
        rows[name] = {k: c[k] for k in c if not isinstance(c[k], dict)}
        print(f"{name:26s} {size:4d}px  params {c['params']/1e6:7.2f} M  GFLOPs {c['gflops']:8.3f}  "
              f"bs1 {c['latency_ms_per_patch']:8.3f} ms/patch  bs{big} {c[f'latency_ms_per_patch_bs{big}']:8.3f} ms/patch", flush=True)
    cv = rows["custom_vit"]
    r_uni1 = rows["uni (vit_large_patch16)"]["latency_ms_per_patch"] / cv["latency_ms_per_patch"]
    r_uniB = rows["uni (vit_large_patch16)"][f"latency_ms_per_patch_bs{big}"] / cv[f"latency_ms_per_patch_bs{big}"]
    r_rs1 = rows["resnetrs50"]["latency_ms_per_patch"] / cv["latency_ms_per_patch"]
    r_rsB = rows["resnetrs50"][f"latency_ms_per_patch_bs{big}"] / cv[f"latency_ms_per_patch_bs{big}"]
    ratio = min(r_uni1, r_uniB)
    p = write_result("bench_latency", dict(ratio=ratio, target=100, device=a.device, precision="bf16-autocast" if on_gpu else "fp32", big_batch=big, models=rows,
        speedup_vs_uni=dict(bs1=r_uni1, big=r_uniB), speedup_vs_resnetrs50=dict(bs1=r_rs1, big=r_rsB),
        target_vs_resnetrs50=10, ratio_vs_resnetrs50=min(r_rs1, r_rsB)))
    print(f"wrote {p}")
    print(f"custom_vit vs ResNet-RS50: {r_rs1:.1f}x (bs1), {r_rsB:.1f}x (bs{big})  target >= 10x")
    print(f"custom_vit vs UNI (ViT-L/16): {r_uni1:.1f}x (bs1), {r_uniB:.1f}x (bs{big})  target >= 100x")
    print(f"ratio {ratio:.1f}")

if __name__ == "__main__": main()
