"""P4: a linear-probe FlagLimit sweep (7 FlagLimits x 3 seeds) with the embedding cache, against one embedding pass.

Real cells (CRCHisto) when available, else the synthetic set. Both timed in this one process from an empty cache:
(a) one `embed` pass over the probe's cell pool and its validation cells; (b) 21 `fit_cell_model('linear_probe')`
calls drawing nested FlagLimit subsets from that pool (the first embeds, the rest index into the cache).
Prints sweep-time / one-pass-time last (target <= 1.3); the JSON's `ratio` is one-pass / sweep (bigger is better).
Usage: python benchmarks/performance/bench_probe_cache.py [--pool 256]
"""
import argparse, os, tempfile, time
os.environ["CELLNB_CACHE_DIR"] = tempfile.mkdtemp(prefix="cellnb-bench-probe-")
import torch
import sys as _sys, pathlib as _pl; _sys.path[:0] = [str(_pl.Path(__file__).resolve().parents[1]), str(_pl.Path(__file__).resolve().parents[1] / "crchisto_study")]   # _common, the study scripts
from _common import write_result
from cellnb.core import crchisto_path
from cellnb.data import group_split, flag_limit
from cellnb.foundation import load_backbone, embed
from cellnb.train import fit_cell_model

def main():
    ap = argparse.ArgumentParser(); ap.add_argument("--pool", type=int, default=256, help="cells per class in the pool")
    ap.add_argument("--backbone", default="effnet_lite0_in1k"); a = ap.parse_args()
    if crchisto_path():
        from cellnb.datasets import load_crchisto
        cells, dataset = load_crchisto(), "crchisto"
    else:
        from cellnb.synthetic import synthetic_ihc
        cells, dataset = synthetic_ihc(a.pool * 2), "synthetic"
    train, valid, _ = group_split(cells, valid=0.1, test=0.2, seed=0)
    pool, valid = flag_limit(train, a.pool, seed=0), flag_limit(valid, max(16, a.pool // 4), seed=0)
    limits = [max(4, a.pool >> k) for k in range(6, -1, -1)]        # 7 nested FlagLimits up to the pool size
    bb = load_backbone(a.backbone)
    t = time.perf_counter()
    embed(bb, pool, progress=False, cache=False); embed(bb, valid, progress=False, cache=False)
    one_pass = time.perf_counter() - t
    print(f"one embedding pass over {len(pool)} + {len(valid)} cells: {one_pass:.1f} s", flush=True)
    t, fits = time.perf_counter(), []
    for seed in range(3):
        for n in limits:
            sub = flag_limit(pool, n, seed=seed)
            f = fit_cell_model("linear_probe", a.backbone, sub, valid, seed=seed, progress=False, device="cpu")
            fits.append((n, seed, round(f.train_seconds, 2)))
    sweep = time.perf_counter() - t
    slower = sweep / one_pass
    print(f"probe sweep, {len(limits)} FlagLimits {limits} x 3 seeds with the cache: {sweep:.1f} s")
    p = write_result("bench_probe_cache", dict(ratio=one_pass / sweep, target=1 / 1.3, sweep_over_one_pass=slower,
        target_sweep_over_one_pass=1.3, one_pass_s=one_pass, sweep_s=sweep, flag_limits=limits, seeds=3,
        pool_cells=len(pool), valid_cells=len(valid), dataset=dataset, backbone=a.backbone, fits=fits))
    print(f"wrote {p}")
    print(f"sweep / one pass = {slower:.2f}x (target <= 1.3x)")

if __name__ == "__main__": main()
