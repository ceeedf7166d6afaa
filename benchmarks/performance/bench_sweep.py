"""P5: the same small sweep run with 1 and with 2 local workers (each worker gets cores/workers torch threads).

Both sweeps run in this one process into fresh folders: 8 runs of a tiny scratch CNN on synthetic cells
(2 FlagLimits x 2 seeds x 2 models), papermill kernels included. Prints time(1 worker) / time(2 workers) last
(target >= 1.7 on 2 cores).
Usage: python benchmarks/performance/bench_sweep.py
"""
import os, tempfile, time
os.environ.setdefault("CELLNB_CACHE_DIR", tempfile.mkdtemp(prefix="cellnb-bench-sweep-"))
import sys as _sys, pathlib as _pl; _sys.path[:0] = [str(_pl.Path(__file__).resolve().parents[1]), str(_pl.Path(__file__).resolve().parents[1] / "crchisto_study")]   # _common, the study scripts
from _common import write_result
from cellnb.sweep import StudyConfig, run_study

def main():
    cfg = dict(models=["cnn", "nin"], backbones=[], flag_limits=[16, 32], seeds=[0, 1], n_per_class=48, blur_sigmas=[1.6],
               blur_placements=["post"], epochs=2, batch_size=32, n_boot=20, name="bench_sweep")
    times = {}
    for w in (1, 2):
        out = tempfile.mkdtemp(prefix=f"cellnb-bench-sweep-w{w}-")
        t = time.perf_counter()
        res = run_study(StudyConfig(**cfg).validate(), out, executor="local", workers=w, progress=False)
        times[w] = time.perf_counter() - t
        ok = int((res.groupby("run_id")["status"].first() == "ok").sum())
        print(f"{w} worker(s): {times[w]:.1f} s for {res['run_id'].nunique()} runs ({ok} ok)", flush=True)
    ratio = times[1] / times[2]
    p = write_result("bench_sweep", dict(ratio=ratio, target=1.7, seconds_1_worker=times[1], seconds_2_workers=times[2],
                                         runs=res["run_id"].nunique(), config=cfg))
    print(f"wrote {p}")
    print(f"ratio {ratio:.2f} (1-worker time / 2-worker time, target >= 1.7)")

if __name__ == "__main__": main()
