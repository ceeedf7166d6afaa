"""A full_ft training step of EfficientNet-Lite0 at 224 px, NCHW (torch's default) against NHWC (channels-last, what
`fit_cell_model` uses for fine-tuning, since 74cd9cd), side by side in this one process.

The step is the study's: `BackboneClassifier` over the packaged ImageNet weights, a batch of CRCHisto cells (48-px
crops) brought to the backbone's input by cellnb's own `pipeline_for` (48 -> 40 -> 224 px, ImageNet normalisation),
cross-entropy, backward, AdamW with the backbone at a tenth of the head's lr; on CUDA under bf16 autocast, as
`fit_cell_model` trains there. Median of repeats after one warm-up step; the two layouts alternate so that machine
load hits both alike. Prints NCHW time / NHWC time last (bigger is better) and writes it to
benchmarks/results/bench_finetune_step.json.
Usage: python benchmarks/performance/bench_finetune_step.py [--batch 64] [--repeats 3] [--threads N] [--device cpu|cuda]
"""
import argparse, statistics, time, torch
import torch.nn.functional as F
import sys as _sys, pathlib as _pl; _sys.path[:0] = [str(_pl.Path(__file__).resolve().parents[1]), str(_pl.Path(__file__).resolve().parents[1] / "crchisto_study")]   # _common, the study scripts
from _common import write_result
from cellnb.core import bf16_autocast, crchisto_path
from cellnb.datasets import load_crchisto
from cellnb.foundation import load_backbone
from cellnb.transforms import pipeline_for
from cellnb.train import BackboneClassifier

def make_step(memory_format, x, y, n_classes, device):
    torch.manual_seed(0)
    net = BackboneClassifier(load_backbone("effnet_lite0_in1k"), n_classes).to(device).train()
    net = net.to(memory_format=memory_format)
    opt = torch.optim.AdamW([dict(params=net.backbone.parameters(), lr=1e-4), dict(params=net.head.parameters(), lr=1e-3)])
    def step():
        with bf16_autocast(device): loss = F.cross_entropy(net(x).float(), y)
        opt.zero_grad(); loss.backward(); opt.step()
        if device.type == "cuda": torch.cuda.synchronize()
    return step

def main():
    ap = argparse.ArgumentParser(); ap.add_argument("--batch", type=int, default=64); ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None); ap.add_argument("--device", default="cpu"); a = ap.parse_args()
    if a.batch < 1 or a.repeats < 1: raise SystemExit(f"--batch and --repeats must be at least 1 (got {a.batch}, {a.repeats})")
    if a.device.startswith("cuda") and not torch.cuda.is_available(): raise SystemExit("--device cuda: torch sees no GPU here; use --device cpu")
    if a.threads: torch.set_num_threads(a.threads)
    if crchisto_path() is None: raise SystemExit("CRCHisto not found: set CELLNB_CRCHISTO to its folder (the step trains on its cells)")
    device = torch.device(a.device)
    cs = load_crchisto(crop=48)   # the study's crop
    if a.batch > len(cs): raise SystemExit(f"--batch {a.batch} is more than CRCHisto's {len(cs)} cells; give a smaller batch")
    idx = torch.randperm(len(cs), generator=torch.Generator().manual_seed(0))[:a.batch]
    pipe = pipeline_for(load_backbone("effnet_lite0_in1k"), src_size=cs.images.shape[-1])
    x, y = pipe(cs.images[idx].to(device)), cs.labels[idx].to(device)
    layouts = {"NCHW": torch.contiguous_format, "NHWC": torch.channels_last}
    steps = {k: make_step(mf, x, y, len(cs.classes), device) for k, mf in layouts.items()}
    for s in steps.values(): s()   # warm-up
    times = {k: [] for k in layouts}
    for _ in range(a.repeats):
        for k, s in steps.items():
            t = time.perf_counter(); s(); times[k].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    for k in layouts: print(f"{k}: {med[k]:.2f} s/step, {a.batch / med[k]:.1f} img/s (steps: {', '.join(f'{t:.2f}' for t in times[k])})", flush=True)
    ratio = med["NCHW"] / med["NHWC"]
    p = write_result("bench_finetune_step", dict(ratio=ratio, target=1.0, batch=a.batch, repeats=a.repeats, device=a.device,
                                                 seconds_per_step=med, steps=times))
    print(f"wrote {p}")
    print(f"ratio {ratio:.2f} (NCHW step time / NHWC step time; target >= 1.0: fine-tuning in NHWC is no slower)")

if __name__ == "__main__": main()
