"""Speed of the synthetic double-IHC generator on one CPU core (a benchmark, not a test).

Renders `--cells` cells (in repeats, after a warm-up) with torch.set_num_threads(1) and prints cells/s both per
second of CPU time (what one core delivers, robust to a busy machine) and per second of wall-clock time.
Target: at least 2,000 cells/s at 80 px on one core. Writes benchmarks/results/bench_synthetic.json.

Usage: python benchmarks/performance/bench_synthetic.py [--cells 4096] [--size 80] [--difficulty 0.5] [--repeats 3]
"""
import argparse, sys, time
from pathlib import Path
import torch

import sys as _sys, pathlib as _pl; _sys.path[:0] = [str(_pl.Path(__file__).resolve().parents[1]), str(_pl.Path(__file__).resolve().parents[1] / "crchisto_study")]   # _common, the study scripts
from _common import write_result

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--cells', type=int, default=4096); ap.add_argument('--size', type=int, default=80)
    ap.add_argument('--difficulty', type=float, default=0.5); ap.add_argument('--repeats', type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(1)
    from cellnb.synthetic import synthetic_ihc
    synthetic_ihc(64, size=a.size)                                   # warm-up
    n_pc = max(1, a.cells // 4); n = 4 * n_pc
    cpu, wall = [], []
    for r in range(a.repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        synthetic_ihc(n_pc, seed=r, size=a.size, difficulty=a.difficulty)
        wall.append(time.perf_counter() - t0); cpu.append(time.process_time() - c0)
    res = dict(cells=n, size=a.size, difficulty=a.difficulty, repeats=a.repeats,
               cells_per_s_cpu=round(n / min(cpu)), cells_per_s_wall=round(n / min(wall)),
               cells_per_s_wall_median=round(n / sorted(wall)[len(wall) // 2]))
    p = write_result('bench_synthetic', res)
    print(f"synthetic_ihc at {a.size} px, difficulty {a.difficulty}, one thread, {n} cells x {a.repeats}:")
    print(f"  {res['cells_per_s_cpu']:,} cells/s per CPU-second (best)   {res['cells_per_s_wall']:,} cells/s wall clock (best), "
          f"{res['cells_per_s_wall_median']:,} (median)   -> {p}")
    print(f"target >= 2,000 cells/s on one core: {'met' if res['cells_per_s_cpu'] >= 2000 else 'NOT met'}")

if __name__ == '__main__': main()
