"""Why CustomViT trails the CNN on CRCHisto, and what closes the gap: variants compared on one image-grouped fold.

Fold 0 of the 2-fold CV of crchisto_cv.py (same split, same tenth of training images held out for model selection),
512 cells per class, 12 epochs (twice the CV's 6). Each variant is scored on the other half of the images with
image-bootstrap CIs, and against the baseline by a paired image bootstrap of macro-F1 (cellnb.evaluate.paired_compare).
Writes benchmarks/results/custom_vit_ablation.json after each variant (--resume skips finished ones).
Usage: python benchmarks/ablations/custom_vit_ablation.py [--epochs 12] [--flag-limit 512] [--only base,local_mlp] [--resume] [--threads 1]
Each ViT variant is also compared with the small CNN trained the same way (vs_cnn).
"""
import argparse, json, time
from pathlib import Path
import pandas as pd, torch
import sys as _sys, pathlib as _pl; _sys.path[:0] = [str(_pl.Path(__file__).resolve().parents[1]), str(_pl.Path(__file__).resolve().parents[1] / "crchisto_study")]   # _common, the study scripts
from _common import write_result, RESULTS
from crchisto_cv import _train_valid
from cellnb.core import crchisto_path
from cellnb.data import group_folds, flag_limit
from cellnb.datasets import load_crchisto
from cellnb.models import create_model
from cellnb.train import fit_cell_model
from cellnb.evaluate import evaluate, paired_compare

RUNS = Path(__file__).resolve().parents[1] / "runs" / "custom_vit_ablation"   # per-variant predictions (git-ignored)
VARIANTS = {  # name -> (model, model_kwargs, fit kwargs)
    "cnn": ("cnn", {}, {}),
    "base": ("custom_vit", {"local_mlp": False}, {}),   # the model before the local MLPs (session 2)
    "local_mlp": ("custom_vit", {"local_mlp": True}, {}),   # custom_vit's default since session 3
    "local_mlp_small": ("custom_vit", {"local_mlp": True, "dim": 128, "depth": 4, "num_heads": 4}, {}),
}

def main():
    ap = argparse.ArgumentParser(); ap.add_argument("--epochs", type=int, default=12); ap.add_argument("--flag-limit", type=int, default=512)
    ap.add_argument("--only", default=None); ap.add_argument("--resume", action="store_true"); ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args()
    if a.threads: torch.set_num_threads(a.threads)
    cells = load_crchisto(crchisto_path(required=True), crop=48)
    train_all, test = group_folds(cells, k=2, seed=0)[0]
    train, valid = _train_valid(train_all, 0)
    train = flag_limit(train, a.flag_limit, seed=0)
    out = RESULTS / "custom_vit_ablation.json"
    rows = json.loads(out.read_text())["variants"] if (a.resume and out.exists()) else {}
    preds = {}; RUNS.mkdir(parents=True, exist_ok=True)
    for name in (a.only.split(",") if a.only else VARIANTS):
        arch, mkw, fkw = VARIANTS[name]
        if name in rows and (RUNS / f"{name}.parquet").exists():
            preds[name] = pd.read_parquet(RUNS / f"{name}.parquet"); continue
        n_params = sum(p.numel() for p in create_model(arch, 4, **mkw).parameters())
        fm = fit_cell_model("scratch", arch, train, valid, epochs=a.epochs, seed=0, bs=64, progress=False, model_kwargs=mkw, **fkw)
        p, m = evaluate(fm, test, n_boot=1000, group_bootstrap=True, seed=0)
        preds[name] = p
        rows[name] = dict(arch=arch, model_kwargs=mkw, params_m=n_params / 1e6, train_seconds=fm.train_seconds,
                          img_per_s=len(train) * a.epochs / fm.train_seconds, best_epoch=fm.best_epoch,
                          accuracy=m["accuracy"], macro_f1=m["macro_f1"], macro_f1_ci=[m["macro_f1_ci_low"], m["macro_f1_ci_high"]],
                          weighted_f1=m["weighted_f1"])
        p.to_parquet(RUNS / f"{name}.parquet")
        if name != "base" and "base" in preds:
            rows[name]["vs_base"] = paired_compare(p, preds["base"], n_boot=1000, group_bootstrap=True)
        r = rows[name]
        print(f"{name:16s} macro-F1 {r['macro_f1']:.3f} [{r['macro_f1_ci'][0]:.3f}, {r['macro_f1_ci'][1]:.3f}]  weighted-F1 {r['weighted_f1']:.3f}  "
              f"({r['params_m']:.2f} M params, {r['train_seconds']:.0f} s, best epoch {r['best_epoch']})"
              + (f"  vs base {r['vs_base']['diff']:+.3f} [{r['vs_base']['ci_low']:+.3f}, {r['vs_base']['ci_high']:+.3f}]" if "vs_base" in r else ""), flush=True)
        write_result("custom_vit_ablation", dict(fold=0, flag_limit=a.flag_limit, epochs=a.epochs, n_train=len(train),
                                                 n_test=len(test), variants=rows))

    if "cnn" in preds:   # each ViT variant against the small CNN, same cells, same budget
        for name in preds:
            if name != "cnn": rows[name]["vs_cnn"] = paired_compare(preds[name], preds["cnn"], n_boot=1000, group_bootstrap=True)
        for name, r in rows.items():
            if "vs_cnn" in r: print(f"{name:16s} vs cnn {r['vs_cnn']['diff']:+.3f} [{r['vs_cnn']['ci_low']:+.3f}, {r['vs_cnn']['ci_high']:+.3f}]")
        write_result("custom_vit_ablation", dict(fold=0, flag_limit=a.flag_limit, epochs=a.epochs, n_train=len(train),
                                                 n_test=len(test), variants=rows))

if __name__ == "__main__": main()
