"""The committed results as tidy tables: one CSV per experiment under benchmarks/results/, read by the study notebook
(nbs/20_crchisto_study.ipynb) and `make figures`. Columns: benchmarks/results/README.md.

Reads the JSONs the experiment scripts write (benchmarks/results/*.json) and writes
  flaglimit.csv              one row per FlagLimit study entry x FlagLimit x results JSON (mean over seeds, t 95% CI)
  flaglimit_differences.csv  every paired or Welch difference the FlagLimit study computed (gains with data, model
                             against model, protocol against protocol, schedule controls, class mix, slope-accuracy r)
  flaglimit_blur_slopes.csv  blur degradation slopes per entry and placement
  blur_curves.csv            the blur study (crchisto_blur_answers.json): macro-F1 per entry x placement x sigma, image-bootstrap CI
  blur_placement_slopes.csv  the blur study's degradation slopes per entry x placement x blur axis (sigma, sigma_40px)
  cv.csv                     the 2-fold cross-validation rows (CPU and GPU)
  latency.csv                the controlled latency benchmark (one row per device x model x batch size)
  performance.csv            the engineering benchmarks (P1-P5 and the others): one row per measured ratio
Usage: python benchmarks/results_tables.py [--check]   (--check: exit 1 when a committed CSV differs from what the JSONs give)
"""
import argparse, io, json, sys
from pathlib import Path
import numpy as np, pandas as pd
from scipy import stats

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE / "crchisto_study"), str(HERE)]
from _common import RESULTS

ALL = 100000                      # FlagLimit 'all': more cells than any class has (each class gives all it has)
BACKBONE = "effnet_lite0_in1k"
# Results JSONs of the FlagLimit study whose rows are the curves, oldest first (a later folder re-measures a point with
# the same policy); the backbone's rows in the first two are on its own crop, superseded by the shared 40-px patch.
CURVES = ["crchisto_flaglimit", "crchisto_flaglimit_balanced", "crchisto_flaglimit_shared40", "crchisto_flaglimit_shared40_balanced",
          *(f"crchisto_flaglimit_shared40_{x}" for x in ("ft1024", "ft2048", "fullft_grid", "ftall", "fullft512", "fullft1024", "fullft2048", "fullftall")),
          "crchisto_lora"]   # the LoRA study (crchisto_lora.yaml): lora on the same split, crop and step policy
# Schedule controls: one FlagLimit re-run with twice the optimizer steps (not a point of the curves).
LONG = ["crchisto_flaglimit_shared40_fullft256long", "crchisto_flaglimit_shared40_fullft512long", "crchisto_flaglimit_shared40_ftlast512long"]
OWN_CROP = {"crchisto_flaglimit", "crchisto_flaglimit_balanced"}   # their backbone rows are superseded

def label(f) -> str:
    "A FlagLimit as the report writes it: 'all' for every cell."
    return "all" if int(f) >= ALL else str(int(f))

def _load(name): return json.loads((RESULTS / f"{name}.json").read_text())

def _split(entry):
    "'effnet_lite0_in1k · ft_last' -> (model, protocol); a scratch entry is its model name."
    m, _, p = entry.partition(" · ")
    return m, (p or "scratch")

def _keep(name, entry) -> bool:
    return not (name in OWN_CROP and _split(entry)[0] == BACKBONE)

def _t(mean, sd, n):
    "t 95% CI of a mean over n seeds from the seed SD (None, None for one seed)."
    if n < 2 or sd is None: return None, None
    h = float(stats.t.ppf(.975, n - 1) * sd / n ** .5)
    return mean - h, mean + h

def flaglimit() -> pd.DataFrame:
    rows = []
    for name in CURVES + LONG:
        if not (RESULTS / f"{name}.json").exists(): continue
        for e, per in _load(name)["table"].items():
            if not _keep(name, e): continue
            m, p = _split(e)
            for f, r in per.items():
                lo, hi = _t(r["macro_f1"], r.get("seed_sd"), r["n_seeds"])
                seeds = r.get("seed_macro_f1", {})
                rows.append(dict(experiment=name, model=m, protocol=p, entry=e, loss="balanced" if "balanced" in name else "plain",
                                 schedule="long" if name in LONG else "study", flag_limit=int(f), flag_limit_label=label(f),
                                 n_train_per_class=r.get("n_train_per_class"), n_seeds=r["n_seeds"], macro_f1=r["macro_f1"],
                                 macro_f1_ci_low=lo, macro_f1_ci_high=hi, macro_f1_seed_sd=r.get("seed_sd"),
                                 macro_f1_boot_ci_low=r["boot_ci"][0], macro_f1_boot_ci_high=r["boot_ci"][1],
                                 weighted_f1=r["weighted_f1"], accuracy=r["accuracy"], train_seconds_per_run=r["train_seconds"],
                                 **{f"macro_f1_seed{s}": seeds.get(str(s)) for s in range(3)}))
    d = pd.DataFrame(rows)
    # the curve: for each plain, study-schedule entry and FlagLimit, the row with most seeds, then the later folder's
    cur = d[(d.loss == "plain") & (d.schedule == "study")].copy()
    cur["order"] = cur.experiment.map({n: i for i, n in enumerate(CURVES)})
    best = cur.sort_values(["n_seeds", "order"]).drop_duplicates(["entry", "flag_limit"], keep="last").index
    d["on_curve"] = d.index.isin(best)
    return d.sort_values(["protocol", "model", "flag_limit", "experiment"]).reset_index(drop=True)

def _protocol_pair(key) -> tuple:
    "'effnet_lite0_in1k · full_ft minus lora' -> the two entries it compares, in the order its gain points (first minus second)."
    a, b = key.split(" minus ")
    return a, f"{_split(a)[0]} · {b}"

def _gain(g): return dict(mean=g.get("mean"), ci_low=g["ci"][0], ci_high=g["ci"][1], n=g.get("n"), method=g.get("method", "paired by seed"))

def differences() -> pd.DataFrame:
    rows = []
    add = lambda **k: rows.append(k)
    for name in CURVES + LONG:
        if not (RESULTS / f"{name}.json").exists(): continue
        d = _load(name)
        for e, v in d.get("a_scratch_keeps_rising", {}).items():
            if not _keep(name, e): continue
            for kind, span, g in (("gain_last_step", v["last_step"], v["gain_last_step"]), ("gain_span", v["all_seeds_span"], v["gain_all_seeds_span"])):
                add(experiment=name, kind=kind, entry=e, other=e, flag_limit_from=span[0], flag_limit_to=span[1], **_gain(g))
        for e, per in d.get("c_vit_vs_cnns", {}).items():
            if not _keep(name, e): continue
            for f, v in per.items():
                add(experiment=name, kind="model_vs_model", entry="custom_vit", other=e, flag_limit_from=int(f), flag_limit_to=int(f), **_gain(v["vit_minus_model"]))
        for k, per in d.get("f_protocol_gains", {}).items():
            a, other = _protocol_pair(k)
            for f, v in per.items():
                add(experiment=name, kind="protocol_vs_protocol", entry=a, other=other, flag_limit_from=int(f), flag_limit_to=int(f), **_gain(v["gain"]))
        for e, per in d.get("g_against_prior", {}).items():
            for step, v in per.items():
                lo, hi = step.split("->")
                add(experiment=name, kind="gain_against_prior", entry=e, other=e, flag_limit_from=int(lo), flag_limit_to=int(hi),
                    prior=v["prior_json"].removesuffix(".json"), **_gain(v["gain"]))
        for k, per in d.get("f_against_prior", {}).items():
            a, other = _protocol_pair(k)   # the key says which way the gain points (the costlier protocol first), not here/prior
            for f, v in per.items():
                add(experiment=name, kind="protocol_vs_protocol", entry=a, other=other, flag_limit_from=int(f), flag_limit_to=int(f),
                    prior=v["prior_json"].removesuffix(".json"), **_gain(v["gain"]))
        for e, v in (d.get("e_class_mix") or {}).items():
            if not _keep(name, e): continue
            for kind in ("balanced_minus_plain", "prior_corrected_minus_plain"):
                add(experiment=name, kind=kind.removesuffix("_minus_plain") + "_vs_plain", entry=e, other=e,
                    flag_limit_from=v["flag_limit"], flag_limit_to=v["flag_limit"], **_gain(v[kind]))
    # finding (d): blur slope against clean macro-F1 across the models on every cell (the probe on the shared patch)
    from tables import _r_with
    r, _ = _r_with(_load("crchisto_flaglimit"), _load("crchisto_flaglimit_shared40"))
    rows.append(dict(experiment="crchisto_flaglimit_shared40", kind="slope_accuracy_r", entry=f"{r['n_models']} models", other=r["placement"],
                     flag_limit_from=r["flag_limit"], flag_limit_to=r["flag_limit"], mean=r["r"], ci_low=r["ci"][0], ci_high=r["ci"][1],
                     n=r["n_models"], method="Pearson r, Fisher z CI"))
    # schedule controls: a curve's step split into more steps on the same cells and more cells on the same steps
    from tables import SCHEDULE_CONTROLS, _steps
    from crchisto_flaglimit import _seed_gain
    for x, (entry, short, more) in SCHEDULE_CONTROLS.items():
        long = f"crchisto_flaglimit_shared40_{x}"
        dd = {k: _load(n) for k, n in dict(short=short, long=long, more=more).items()}
        (fl, _), = dd["long"]["table"][entry].items()
        (fl_more, _), = dd["more"]["table"][entry].items()
        pt = {k: (int(f), _steps(dd[k], _split(entry)[1], f), dd[k]["table"][entry][f]) for k, f in dict(short=fl, long=fl, more=fl_more).items()}
        for kind, a, b in (("more_steps_same_cells", "short", "long"), ("more_cells_same_steps", "long", "more")):
            g = _seed_gain(pt[b][2], pt[a][2])
            add(experiment=long, kind=kind, entry=entry, other=entry, flag_limit_from=pt[a][0], flag_limit_to=pt[b][0],
                steps_from=pt[a][1], steps_to=pt[b][1], **_gain(g))
    d = pd.DataFrame(rows)
    d.insert(d.columns.get_loc("flag_limit_to") + 1, "step_label", [f"{label(a)} -> {label(b)}" if a != b else label(a)
                                                                    for a, b in zip(d.flag_limit_from, d.flag_limit_to)])
    return d

def blur_slopes() -> pd.DataFrame:
    rows = []
    for name in CURVES + LONG:
        if not (RESULTS / f"{name}.json").exists(): continue
        for e, pls in _load(name).get("d_blur_slopes", {}).items():
            if not _keep(name, e) or not isinstance(pls, dict): continue
            m, p = _split(e)
            for pl, v in pls.items():
                rows.append(dict(experiment=name, model=m, protocol=p, entry=e, placement=pl, flag_limit=v["flag_limit"],
                                 flag_limit_label=label(v["flag_limit"]), slope=v["slope"], ci_low=v["seed_ci"][0],
                                 ci_high=v["seed_ci"][1], n_runs=v["n_runs"]))
    return pd.DataFrame(rows)

def _blur(part) -> pd.DataFrame:
    "A table the blur study (crchisto_blur.py) keeps in its JSON; None (no CSV) until the study has run."
    return pd.DataFrame(_load("crchisto_blur_answers")[part]) if (RESULTS / "crchisto_blur_answers.json").exists() else None

def blur_curves() -> pd.DataFrame: return _blur("curves")
def blur_placement_slopes() -> pd.DataFrame: return _blur("slopes")

def cv() -> pd.DataFrame:
    rows = []
    for name, device in (("crchisto_cv", "cpu"), ("crchisto_cv_gpu", "H200")):
        d = _load(name)
        for k, r in d["models"].items():
            folds = r["folds"]
            rows.append(dict(experiment=name, device=device, entry=k, model=r["model"], protocol=r["protocol"], crop=r.get("crop", d["crop"]),
                             flag_limit_label=label(r["flag_limit"] or ALL), epochs=r["epochs"], tta=bool(r.get("tta")),
                             ensemble="+" in k.replace("+tta", ""), seed=int(k.split("seed")[1].split("/")[0].split("+")[0]) if "/seed" in k else 0,
                             accuracy=r["accuracy"], accuracy_ci_low=r["accuracy_ci"][0], accuracy_ci_high=r["accuracy_ci"][1],
                             macro_f1=r["macro_f1"], macro_f1_ci_low=r["macro_f1_ci"][0], macro_f1_ci_high=r["macro_f1_ci"][1],
                             weighted_f1=r["weighted_f1"], weighted_f1_ci_low=r["weighted_f1_ci"][0], weighted_f1_ci_high=r["weighted_f1_ci"][1],
                             weighted_f1_fold0=folds[0]["weighted_f1"], weighted_f1_fold1=folds[1]["weighted_f1"],
                             n_test_cells=sum(f["n_test"] for f in folds), train_seconds=sum(f["train_seconds"] for f in folds)))
    return pd.DataFrame(rows).sort_values(["experiment", "weighted_f1"], ascending=[True, False]).reset_index(drop=True)

def latency() -> pd.DataFrame:
    rows = []
    for name in ("bench_latency", "bench_latency_h200", "bench_latency_study"):
        if not (RESULTS / f"{name}.json").exists(): continue
        d = _load(name)
        for m, r in d["models"].items():
            for b in sorted({int(k.rsplit("bs", 1)[1]) for k in r if k.startswith("latency_ms_per_patch_bs")}):
                rows.append(dict(benchmark=name, device=d["device"] if d["device"] == "cpu" else "H200", precision=d.get("precision", "fp32"),
                                 threads=d["machine"]["torch_threads"], model=m, input_px=r.get("input_px", 40 if m == "custom_vit" else 224),
                                 params=r["params"], gflops=r["gflops"], batch=b, ms_per_patch=r[f"latency_ms_per_patch_bs{b}"],
                                 patches_per_s=r[f"throughput_bs{b}"], peak_mem_mb=r.get("peak_mem_mb")))
    return pd.DataFrame(rows)

PERFORMANCE = ("bench_latency", "bench_latency_h200", "bench_flops", "bench_flops_compiled", "bench_flops_h200", "bench_pipeline", "bench_probe_cache",
               "bench_sweep", "bench_synthetic", "bench_finetune_step", "custom_vit_ablation")

def performance() -> pd.DataFrame:
    "Every scalar of each engineering benchmark's JSON, one row each (nested keys joined with '.')."
    rows = []
    def walk(name, pre, v):
        if isinstance(v, dict):
            for k, x in v.items(): walk(name, f"{pre}.{k}" if pre else k, x)
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            rows.append(dict(benchmark=name, key=pre, value=float(v)))
    for name in PERFORMANCE:
        if (RESULTS / f"{name}.json").exists():
            d = _load(name); d.pop("machine", None); walk(name, "", d)
    return pd.DataFrame(rows)

TABLES = dict(flaglimit=flaglimit, flaglimit_differences=differences, flaglimit_blur_slopes=blur_slopes,
              blur_curves=blur_curves, blur_placement_slopes=blur_placement_slopes, cv=cv,
              latency=latency, performance=performance)

def render(name) -> str | None:
    t = TABLES[name]()
    if t is None: return None
    buf = io.StringIO(); t.to_csv(buf, index=False, float_format="%.6g"); return buf.getvalue()

def main():
    ap = argparse.ArgumentParser(); ap.add_argument("--check", action="store_true"); a = ap.parse_args()
    stale = []
    for name in TABLES:
        p, text = RESULTS / f"{name}.csv", render(name)
        if text is None: continue
        if a.check:
            if not p.exists() or p.read_text() != text: stale.append(p.name)
        else:
            p.write_text(text); print(f"wrote {p.relative_to(HERE.parent)} ({text.count(chr(10)) - 1} rows)")
    if stale: sys.exit(f"results_tables.py: {', '.join(stale)} differ from the JSONs; run `python benchmarks/results_tables.py` and commit")

if __name__ == "__main__": main()
