"""The CRCHisto blur study's answers (issue 47): where the blur happens relative to a backbone's 40 -> 224 resize.

Reads the finished runs of crchisto_blur.yaml (one or more study folders, or the run records kept in git) and answers,
with 95% CIs from a paired image bootstrap (the 19 test images resampled with replacement, the same resample for every
run, so differences between runs are paired on the same cells):
  (a) is blur robustness comparable across architectures?  each entry's degradation slope (macro-F1 per unit
      log2(1 + sigma_40px), clean point shared, OLS over the five points clean + four sigmas) per placement, and its
      difference to the CNN's slope, and whether the slope follows clean accuracy (Pearson r of slope against clean
      macro-F1 over the entries, Fisher-z 95% CI);
  (b) does post-resize blur flatter the backbones?  for a backbone, macro-F1 at the largest sigma blurred after the
      resize to 224 px (`post`, sigma in 224-px pixels) minus blurred before it (`pre`, the same number in 40-px
      pixels); for the 40-px models the two are one test (post_equals_pre) and the difference is 0 by construction;
  (c) at equal physical blur (sigma in 40-px units), do backbones and 40-px models degrade alike?  the backbone's
      slope on the sigma_40px axis (pre placement, and post with its sigma converted: sigma * 40 / 224) against each
      40-px model's.
With several seeds an entry's numbers are the mean over its seeds (each bootstrap resample averages the seeds' runs).
Writes benchmarks/results/crchisto_blur_answers.json (crchisto_blur.json is the study folder's own summary, written by
crchisto_flaglimit.py like every FlagLimit folder's), with the blur curves (macro-F1 per entry x placement x sigma) and the
slopes (per entry x placement x axis) that benchmarks/results_tables.py turns into blur_curves.csv and
blur_placement_slopes.csv for nbs/20_crchisto_study.ipynb.
Usage: python benchmarks/crchisto_study/crchisto_blur.py [--runs DIR ...] [--n-boot 2000]
       (default --runs benchmarks/results/run_records/crchisto_blur: the finished runs kept in git)
"""
import argparse, json
from pathlib import Path
import numpy as np, pandas as pd
import sys as _sys; _sys.path[:0] = [str(Path(__file__).resolve().parents[1])]
from _common import write_result, RESULTS, pearson_ci

HERE = Path(__file__).resolve().parent
RECORDS = HERE.parent / "results" / "run_records" / "crchisto_blur"
PLACEMENTS = ("source", "pre", "post")

def read_runs(dirs) -> tuple:
    "(rows, predictions) of every finished run under the given folders (a study folder's runs/ or a records folder)."
    rows, preds, seen = [], [], set()
    for d in map(Path, dirs):
        base = d / "runs" if (d / "runs").is_dir() else d
        for rd in sorted(p for p in base.glob("*/") if (p / "result.json").is_file() and (p / "predictions.parquet").is_file()):
            if rd.name in seen: continue
            r = pd.DataFrame(json.loads((rd / "result.json").read_text()))
            if not (r.status == "ok").all(): continue
            seen.add(rd.name); rows.append(r); preds.append(pd.read_parquet(rd / "predictions.parquet").assign(run_id=rd.name))
    if not rows: raise SystemExit(f"crchisto_blur: no finished runs under {', '.join(map(str, dirs))}; run crchisto_blur.yaml first (see its header)")
    rows = pd.concat(rows, ignore_index=True)
    rows["entry"] = np.where(rows.protocol == "scratch", rows.model, rows.model + " · " + rows.protocol)
    return rows, pd.concat(preds, ignore_index=True)

def _macro_f1(cm):
    "Macro-F1 of confusion matrices (..., C, C), rows true; a class absent from both truth and prediction counts 0."
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    denom = cm.sum(-1) + cm.sum(-2)
    return np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0).mean(-1)

def _slope(lx, y):
    "OLS slope of y (..., n) on lx (n,)."
    lx = lx - lx.mean()
    return (y - y.mean(-1, keepdims=True)) @ lx / (lx @ lx)

def bootstrap_scores(rows, preds, n_boot=2000, seed=0):
    """Per run: the conditions (condition, sigma, sigma_40px) and macro-F1 on the test cells, point and bootstrap
    (n_boot x conditions), every run resampled by the same image draws."""
    classes = sorted(preds.true.unique()); C = len(classes); code = {c: i for i, c in enumerate(classes)}
    groups = sorted(preds.group.unique()); gi = {g: i for i, g in enumerate(groups)}
    W = np.random.default_rng(seed).multinomial(len(groups), np.full(len(groups), 1 / len(groups)), size=n_boot)   # (B, G)
    out = {}
    for rid, p in preds.groupby("run_id"):
        conds = p[["condition", "sigma"]].drop_duplicates().sort_values(["condition", "sigma"]).to_numpy().tolist()
        r = rows[rows.run_id == rid].set_index(["condition", "sigma"])
        cm = np.zeros((len(conds), len(groups), C, C))
        for k, (c, s) in enumerate(conds):
            q = p[(p.condition == c) & (p.sigma == s)]
            np.add.at(cm[k], (q.group.map(gi).to_numpy(), q.true.map(code).to_numpy(), q.pred.map(code).to_numpy()), 1)
        point = _macro_f1(cm.sum(1))                                   # (K,)
        boot = _macro_f1(np.einsum("bg,kgij->bkij", W, cm))           # (B, K)
        s40 = [float(r.loc[(c, s), "sigma_40px"]) if c != "clean" else 0.0 for c, s in conds]
        out[rid] = dict(conds=conds, sigma_40px=np.array(s40), point=point, boot=boot)
    return out

def _ci(v): return [float(np.quantile(v, 0.025)), float(np.quantile(v, 0.975))]

def entry_slopes(rows, scores):
    "Per entry x placement x axis: slope (mean over seeds) with its bootstrap draws."
    meta = rows.drop_duplicates("run_id").set_index("run_id")
    res = {}
    for entry, runs in meta.groupby("entry").groups.items():
        for place in PLACEMENTS:
            for axis in ("sigma", "sigma_40px"):
                pts, boots = [], []
                for rid in runs:
                    s = scores[rid]; conds = s["conds"]
                    idx = [i for i, (c, _) in enumerate(conds) if c in ("clean", place)]
                    if len(idx) < 3: continue
                    x = np.array([conds[i][1] for i in idx], float) if axis == "sigma" else s["sigma_40px"][idx]
                    lx = np.log2(1 + x)
                    pts.append(_slope(lx, s["point"][idx])); boots.append(_slope(lx, s["boot"][:, idx]))
                if pts: res[(entry, place, axis)] = dict(slope=float(np.mean(pts)), boot=np.mean(boots, 0), n_seeds=len(pts))
    return res

def curves(rows, scores):
    "Tidy blur curves: entry x placement x sigma, macro-F1 mean over seeds with a bootstrap CI (clean repeated per placement)."
    meta = rows.drop_duplicates("run_id").set_index("run_id")
    out = []
    for entry, runs in meta.groupby("entry").groups.items():
        conds = scores[runs[0]]["conds"]
        for k, (c, s) in enumerate(conds):
            pt = np.mean([scores[r]["point"][k] for r in runs]); bt = np.mean([scores[r]["boot"][:, k] for r in runs], 0)
            for place in (PLACEMENTS if c == "clean" else (c,)):
                lo, hi = _ci(bt)
                out.append(dict(entry=entry, model=meta.loc[runs[0], "model"], protocol=meta.loc[runs[0], "protocol"],
                                family=meta.loc[runs[0], "family"], placement=place, sigma=float(s),
                                sigma_40px=float(scores[runs[0]]["sigma_40px"][k]), input_size=int(meta.loc[runs[0], "input_size"]),
                                macro_f1=float(pt), ci_low=lo, ci_high=hi, n_seeds=len(runs), n_test=int(meta.loc[runs[0], "n_test"]) if "n_test" in meta else None))
    return pd.DataFrame(out)

def answers(rows, scores, sl, n_boot):
    meta = rows.drop_duplicates("run_id").set_index("run_id")
    entries = sorted(meta.entry.unique())
    backbones = sorted(meta[meta.protocol != "scratch"].entry.unique()); scratch = sorted(meta[meta.protocol == "scratch"].entry.unique())
    d = lambda a, b: dict(diff=float(a["slope"] - b["slope"]), ci=_ci(a["boot"] - b["boot"]))
    one = lambda e, p, ax: {**{k: v for k, v in sl[(e, p, ax)].items() if k != "boot"}, "ci": _ci(sl[(e, p, ax)]["boot"])}
    a = {e: {p: one(e, p, "sigma_40px") for p in PLACEMENTS if (e, p, "sigma_40px") in sl} for e in entries}
    a_vs_cnn = {e: {p: d(sl[(e, p, "sigma_40px")], sl[("cnn", p, "sigma_40px")]) for p in ("source", "pre")
                    if (e, p, "sigma_40px") in sl and ("cnn", p, "sigma_40px") in sl} for e in entries if e != "cnn"}
    b = {}
    for e in entries:
        runs = meta[meta.entry == e].index
        conds = scores[runs[0]]["conds"]; top = max(s for c, s in conds if c == "pre")
        kpre, kpost = conds.index(["pre", top]), conds.index(["post", top])
        pre = np.mean([scores[r]["point"][kpre] for r in runs]); post = np.mean([scores[r]["point"][kpost] for r in runs])
        diff = np.mean([scores[r]["boot"][:, kpost] - scores[r]["boot"][:, kpre] for r in runs], 0)
        b[e] = dict(sigma=float(top), pre=float(pre), post=float(post), post_minus_pre=float(post - pre), ci=_ci(diff),
                    post_equals_pre=bool(meta.loc[runs[0], "input_size"] == 40),
                    slope_post_as_applied=one(e, "post", "sigma"), slope_pre=one(e, "pre", "sigma_40px"))
    c = {bb: {s: {p: d(sl[(bb, p, "sigma_40px")], sl[(s, "pre", "sigma_40px")]) for p in ("pre", "post") if (bb, p, "sigma_40px") in sl}
              for s in scratch if (s, "pre", "sigma_40px") in sl} for bb in backbones}
    clean = {e: float(np.mean([scores[r]["point"][0] for r in meta[meta.entry == e].index])) for e in entries}
    r_clean = {}
    for p in ("source", "pre"):   # (a) does the slope follow clean accuracy?  Pearson r over the entries, Fisher-z 95% CI
        es = [e for e in entries if (e, p, "sigma_40px") in sl]
        if rc := pearson_ci([clean[e] for e in es], [sl[(e, p, "sigma_40px")]["slope"] for e in es]): r_clean[p] = dict(**rc, n_entries=len(es))
    return dict(a_slopes_sigma_40px=a, a_slope_minus_cnn=a_vs_cnn, a_slope_vs_clean=r_clean, b_post_resize_flatters=b, c_equal_physical_blur=c,
                clean_macro_f1=clean, seeds={e: int((meta.entry == e).sum()) for e in entries},
                n_test_cells=int(meta.iloc[0].get("n_test", 0) or 0) or None, n_boot=n_boot)

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", nargs="+", default=[str(RECORDS)]); ap.add_argument("--n-boot", type=int, default=2000)
    a = ap.parse_args()
    rows, preds = read_runs(a.runs)
    n_test = preds[preds.condition == "clean"].groupby("run_id").size()
    rows["n_test"] = rows.run_id.map(n_test)
    scores = bootstrap_scores(rows, preds, a.n_boot)
    sl = entry_slopes(rows, scores)
    cur = curves(rows, scores)
    tab = pd.DataFrame([dict(entry=e, placement=p, x=ax, slope=v["slope"], ci_low=_ci(v["boot"])[0], ci_high=_ci(v["boot"])[1], n_seeds=v["n_seeds"])
                        for (e, p, ax), v in sorted(sl.items())])
    tab["clean_macro_f1"] = tab.entry.map(cur[cur.sigma == 0].drop_duplicates("entry").set_index("entry").macro_f1)
    f = answers(rows, scores, sl, a.n_boot)
    meta = rows.drop_duplicates("run_id")
    p = write_result("crchisto_blur_answers", dict(runs=sorted(meta.run_id), entries={e: sorted(g.seed.astype(int)) for e, g in meta.groupby("entry")},
                                           train_seconds=meta.set_index("run_id").train_seconds.to_dict(), **f,
                                           curves=cur.to_dict("records"), slopes=tab.to_dict("records")))
    print(tab[tab.x == "sigma_40px"].round(3).to_string(index=False))
    print(json.dumps({k: f[k] for k in ("b_post_resize_flatters",)}, indent=1, default=str)[:3000])
    print(f"wrote {p}; then python benchmarks/results_tables.py writes blur_curves.csv and blur_placement_slopes.csv")

if __name__ == "__main__": main()
