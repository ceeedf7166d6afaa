"""CRCHisto FlagLimit study: scaling curves with CIs and the seed paper's findings (a)-(f), from cellnb-study runs.

Runs each study config given (default benchmarks/crchisto_study/crchisto_flaglimit.yaml) with `run_study` into one run folder
(default benchmarks/runs/crchisto_flaglimit, git-ignored; report.html lands there), so a rerun resumes and a grown
grid only runs what is new. Then, from the collected results table of every run in the folder:
  (a) do scratch models keep rising with data?  paired-by-seed gain in macro-F1 from the second-largest FlagLimit to
      the largest, from 512 to the largest, and from the smallest to the largest run with every seed, with t-based
      95% CIs over seeds (the same for each backbone protocol run at two FlagLimits or more);
  (b) does the backbone's linear probe saturate early?  the smallest FlagLimit reaching 95% of its best macro-F1,
      against the same for the scratch models (and for a fine-tuning protocol with a curve of its own);
  (c) the small-patch ViT against the CNNs at the largest FlagLimit custom_vit ran at (paired gain, 95% CI);
  (d) blur degradation slopes (macro-F1 per unit log2(1+sigma)) per placement (source, pre, post), per model at the largest FlagLimit
      run with every seed, mean over seeds with a t-based 95% CI (and the slope at the largest FlagLimit);
  (e) when <run folder>_balanced exists (crchisto_flaglimit_balanced.yaml: the same runs at all cells with a
      class-balanced loss): is the 2048 -> all drop the class mix? balanced-loss and prior-corrected runs against the
      plain ones, per seed, with paired image bootstraps;
  (f) a backbone's protocols against each other where two ran the same FlagLimit (ft_last / full_ft minus the probe,
      full_ft minus ft_last), paired by seed and per seed by image bootstrap;
  (g) with --prior <results JSON> [...]: a curve extended in a new folder, each FlagLimit here against the same entry
      at the largest FlagLimit not above it in those JSONs (paired by seed where both keep per-seed rows, else Welch);
      and (f) across folders: a protocol run here against the backbone's other protocols at the same FlagLimit there.
Writes benchmarks/results/<run folder name>.json (crchisto_flaglimit.json by default); the run folder's report.html and
figures/ show the runs as cellnb-study draws them. The report's figures come from the tidy tables instead
(benchmarks/results_tables.py, then `make figures`).
Usage: python benchmarks/crchisto_study/crchisto_flaglimit.py [--config a.yaml [b.yaml ...]] [--out DIR] [--workers 2] [--summarise-only]
       [--seeds 0] [--flag-limits 64,128] [--no-backbones | --no-scratch] [--models cnn,custom_vit] [--protocols ft_last]
       (run part of the grid now; later calls add the rest)
       [--prior benchmarks/results/<earlier study>.json ...]   (finding (g): this folder's FlagLimits against those curves)
       [--records benchmarks/results/run_records/<study>]   (finished runs kept in git: restored into --out, and added to)
"""
import argparse, json, shutil, time
from pathlib import Path
import numpy as np, pandas as pd
from scipy import stats
import sys as _sys, pathlib as _pl; _sys.path[:0] = [str(_pl.Path(__file__).resolve().parents[1]), str(_pl.Path(__file__).resolve().parents[1] / "crchisto_study")]   # _common, the study scripts
from _common import write_result, pearson_ci
from cellnb.sweep import StudyConfig, run_study, collect, load_predictions, _run_status
from cellnb.evaluate import paired_compare
from cellnb.figures import report, run_slopes, entry_names

HERE = Path(__file__).resolve().parent

def _t_ci(x):
    "Mean and t-based 95% CI of a small sample (seeds)."
    x = np.asarray(x, float); x = x[np.isfinite(x)]
    if len(x) == 0: return dict(mean=None, ci=[None, None], n=0)
    m = float(x.mean())
    if len(x) < 2: return dict(mean=m, ci=[None, None], n=1)
    h = float(stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x)))
    return dict(mean=m, ci=[m - h, m + h], n=int(len(x)))

def _paired_gain(clean, entry, fl_lo, fl_hi, other=None):
    "Seed-paired macro-F1 difference: entry at fl_hi minus (entry at fl_lo, or `other` at fl_hi)."
    a = clean[(clean.entry == entry) & (clean.flag_limit == fl_hi)].set_index("seed")["macro_f1"]
    b = (clean[(clean.entry == other) & (clean.flag_limit == fl_hi)] if other else
         clean[(clean.entry == entry) & (clean.flag_limit == fl_lo)]).set_index("seed")["macro_f1"]
    common = a.index.intersection(b.index)
    return {**_t_ci((a[common] - b[common]).to_numpy()), "seeds": [int(s) for s in common]}

def _paired_runs(out, clean, a, b, fl, n_boot=1000):
    "Per seed both ran: macro-F1(a) - macro-F1(b) at one FlagLimit on the same clean test cells, paired image bootstrap."
    ra, rb = (clean[(clean.entry == e) & (clean.flag_limit == fl)].set_index("seed")["run_id"] for e in (a, b))
    rows = []
    for s in sorted(ra.index.intersection(rb.index)):
        P = load_predictions(out, [ra[s], rb[s]])
        P = P[P.condition == "clean"]
        r = paired_compare(P[P.run_id == ra[s]], P[P.run_id == rb[s]], n_boot=n_boot, seed=0, group_bootstrap=True)
        rows.append(dict(seed=int(s), diff=r["diff"], image_boot_ci=[r["ci_low"], r["ci_high"]]))
    return rows

def findings(res: pd.DataFrame, out=None) -> dict:
    ok = res[(res.status == "ok") & res.macro_f1.notna()].copy()
    ok["entry"] = entry_names(ok)
    clean = ok[ok.condition == "clean"]
    # 'all cells' runs carry the FlagLimit they were asked for (larger than any class)
    per = clean.groupby(["entry", "protocol", "flag_limit"]).agg(
        macro_f1=("macro_f1", "mean"), sd=("macro_f1", "std"), ci_low=("macro_f1_ci_low", "mean"),
        ci_high=("macro_f1_ci_high", "mean"), weighted_f1=("weighted_f1", "mean"), accuracy=("accuracy", "mean"),
        n_seeds=("seed", "nunique"), train_seconds=("train_seconds", "mean"),
        n_train=("n_train_per_class", "first")).reset_index()
    by_seed = {k: {str(int(sd)): float(v) for sd, v in zip(g.seed, g.macro_f1)} for k, g in clean.groupby(["entry", "flag_limit"])}
    table = {e: {str(int(r.flag_limit)): dict(macro_f1=r.macro_f1, seed_sd=None if pd.isna(r.sd) else r.sd,
                                             seed_macro_f1=by_seed[(e, r.flag_limit)],
                                             boot_ci=[r.ci_low, r.ci_high], weighted_f1=r.weighted_f1, accuracy=r.accuracy,
                                             n_seeds=int(r.n_seeds), train_seconds=r.train_seconds, n_train_per_class=r.n_train)
                 for r in g.itertuples()} for e, g in per.groupby("entry")}
    fls = lambda e: sorted(per.loc[per.entry == e, "flag_limit"].unique())
    scratch = sorted(per.loc[per.protocol == "scratch", "entry"].unique())
    # the backbone's entries with a curve: the probe, and a fine-tuning protocol once it ran at two FlagLimits or more
    curves = sorted(e for e in per.loc[per.protocol != "scratch", "entry"].unique() if len(fls(e)) >= 2)
    seeds_at = lambda e: per[per.entry == e].set_index("flag_limit")["n_seeds"]
    def full(e):
        "The largest FlagLimit run with as many seeds as any (where seed CIs exist)."
        n = seeds_at(e); return int(n[n == n.max()].index.max())
    a = {}
    for e in scratch + curves:
        f = fls(e)
        if len(f) >= 2:
            a[e] = dict(last_step=[int(f[-2]), int(f[-1])], gain_last_step=_paired_gain(clean, e, f[-2], f[-1]),
                        gain_512_to_largest=_paired_gain(clean, e, 512, f[-1]) if 512 in f and f[-1] > 512 else None,
                        all_seeds_span=[int(f[0]), full(e)], gain_all_seeds_span=_paired_gain(clean, e, f[0], full(e)))
    def sat(e):
        s = per[per.entry == e].sort_values("flag_limit")
        best = s.macro_f1.max()
        return dict(best=float(best), flag_limit_95pct=int(s.loc[s.macro_f1 >= 0.95 * best, "flag_limit"].iloc[0]))
    b = {e: sat(e) for e in curves + scratch}
    c = {}
    if "custom_vit" in scratch:
        for e in scratch:
            if e == "custom_vit": continue
            common = sorted(set(fls("custom_vit")) & set(fls(e)))
            if not common: continue
            # the largest FlagLimit both ran, and the largest both ran with every seed (seed CIs)
            every = [f for f in common if min(seeds_at("custom_vit")[f], seeds_at(e)[f]) == max(seeds_at("custom_vit").max(), seeds_at(e).max())]
            c[e] = {str(int(f)): dict(vit_minus_model=_paired_gain(clean, "custom_vit", None, f, other=e),
                                      per_seed=_paired_runs(out, clean, "custom_vit", e, f) if out is not None else None)
                    for f in sorted({common[-1], *every[-1:]})}
    d = {}
    try:
        sl = run_slopes(ok, metric="macro_f1")
        sl["entry"] = entry_names(sl)
        for (e, pl), g0 in sl.groupby(["entry", "placement"]):
            top = full(e) if e in set(per.entry) else g0.flag_limit.max()  # the largest FlagLimit with every seed
            g = g0[g0.flag_limit == top]
            t = _t_ci(g.slope)
            d.setdefault(e, {})[pl] = dict(flag_limit=int(top), slope=t["mean"], seed_ci=t["ci"],
                                           n_runs=int(len(g)), slope_at_largest_flag_limit=float(g0[g0.flag_limit == g0.flag_limit.max()].slope.mean()))
    except Exception as ex:  # no blur rows
        d = dict(error=str(ex))
    return dict(table=table, a_scratch_keeps_rising=a, b_saturation=b, c_vit_vs_cnns=c, d_blur_slopes=d,
                d_slope_vs_accuracy=_slope_vs_accuracy(table, d), f_protocol_gains=protocol_gains(clean, out))

def _welch(m1, s1, n1, m2, s2, n2):
    "Difference of two seed means with a Welch t 95% CI, from each side's mean, seed sd and number of seeds."
    v1, v2 = s1 ** 2 / n1, s2 ** 2 / n2
    if v1 + v2 == 0: return dict(mean=m1 - m2, ci=[m1 - m2, m1 - m2], df=None, n=[int(n1), int(n2)])
    df = (v1 + v2) ** 2 / (v1 ** 2 / (n1 - 1) + v2 ** 2 / (n2 - 1))
    h = float(stats.t.ppf(0.975, df) * np.sqrt(v1 + v2))
    return dict(mean=m1 - m2, ci=[m1 - m2 - h, m1 - m2 + h], df=float(df), n=[int(n1), int(n2)])

def _prior_row(priors: dict, entry: str, fl, exact=False):
    """The earlier row for `entry` at the largest FlagLimit not above `fl` (only `fl` itself if `exact`) in the results
    JSONs `priors` (name -> JSON): where two have it, the one keeping per-seed rows wins, then the later one.
    Returns (prior JSON name, its FlagLimit, the row) or None."""
    cands = [(int(f), bool(o.get("seed_macro_f1")), i, name, f, o) for i, (name, pj) in enumerate(priors.items())
             for f, o in pj.get("table", {}).get(entry, {}).items() if (int(f) == int(fl) if exact else int(f) <= int(fl))]
    return max(cands, key=lambda c: c[:3])[3:] if cands else None

def _seed_gain(r: dict, o: dict):
    """Row `r` minus row `o` (results-table rows of two folders): paired by seed (t 95% CI) where both keep per-seed rows
    with seeds in common, else a Welch t 95% CI of the difference of seed means; None with fewer than 2 seeds a side."""
    a, b = r.get("seed_macro_f1"), o.get("seed_macro_f1")
    if a and b and set(a) & set(b):
        common = sorted(set(a) & set(b), key=int)
        return {**_t_ci([a[k] - b[k] for k in common]), "seeds": [int(k) for k in common], "method": "paired by seed"}
    if r["n_seeds"] >= 2 and o["n_seeds"] >= 2:
        return {**_welch(r["macro_f1"], r["seed_sd"], r["n_seeds"], o["macro_f1"], o["seed_sd"], o["n_seeds"]),
                "method": "Welch over seed means"}
    return None

def prior_gains(table: dict, priors: dict) -> dict:
    """(g) A curve extended in a new run folder: each entry's macro-F1 at each FlagLimit here minus the same entry at the
    largest FlagLimit not above it in earlier studies' results JSONs (`priors`: name -> JSON; where two have that
    FlagLimit, the one keeping per-seed rows wins, then the later one). Paired by seed (t 95% CI) where both keep
    per-seed rows, else a Welch t 95% CI of the difference of seed means; where the prior has this very FlagLimit, the
    same difference checks that the re-run reproduces it."""
    out = {}
    for e, rows in table.items():
        for fl, r in rows.items():
            hit = _prior_row(priors, e, fl)
            if hit is None or (g := _seed_gain(r, hit[2])) is None: continue
            name, lo, o = hit
            out.setdefault(e, {})[f"{lo}->{fl}"] = dict(here=r["macro_f1"], prior=o["macro_f1"], prior_json=name, gain=g)
    return out

def prior_protocol_gains(table: dict, priors: dict) -> dict:
    """(f) across folders: a backbone protocol run here against the same backbone's other protocols at the same FlagLimit
    in earlier results JSONs, where this folder did not run that protocol there and that JSON did not run this one (both
    are in-folder pairs, `protocol_gains`, paired by seed and by image).
    Oriented as (f), the costlier minus the cheaper; paired by seed where both keep per-seed rows, else Welch."""
    out = {}
    for e, rows in table.items():
        model, _, proto = e.partition(" · ")
        if proto not in PROTOCOL_ORDER: continue
        for other in PROTOCOL_ORDER:
            o_e = f"{model} · {other}"
            if other == proto: continue
            for fl, r in rows.items():
                if fl in table.get(o_e, {}) or (hit := _prior_row(priors, o_e, fl, exact=True)) is None: continue
                name, _, o = hit
                if fl in priors[name]["table"].get(e, {}): continue   # that folder ran both: its own (f) pairs them
                costlier = PROTOCOL_ORDER.index(proto) > PROTOCOL_ORDER.index(other)
                if (g := _seed_gain(*((r, o) if costlier else (o, r)))) is None: continue
                key = f"{model} · {proto} minus {other}" if costlier else f"{model} · {other} minus {proto}"
                out.setdefault(key, {})[str(fl)] = dict(here=e, here_macro_f1=r["macro_f1"], prior=o_e,
                                                        prior_macro_f1=o["macro_f1"], prior_json=name, gain=g)
    return out

def _read_prior(p) -> dict:
    "An earlier results JSON for --prior, or a one-line error naming it."
    try: d = json.loads(Path(p).read_text())
    except (OSError, ValueError) as ex: raise SystemExit(f"--prior {p}: cannot read it as a results JSON ({ex}); give benchmarks/results/<study>.json")
    if not isinstance(d.get("table"), dict): raise SystemExit(f"--prior {p}: no 'table' of curves in it; give a results JSON this script wrote")
    return d

PROTOCOL_ORDER = ("linear_probe", "ft_last", "lora", "full_ft")   # cheapest first: gains are "more training minus less" (lora back-propagates through the whole backbone but trains few weights: between ft_last and full_ft)

def protocol_gains(clean, out=None) -> dict:
    """(f) A backbone's protocols against each other wherever two ran the same FlagLimit: the costlier minus the cheaper
    (ft_last - linear_probe, full_ft - linear_probe, full_ft - ft_last), paired by seed with a t-based 95% CI, and per
    seed a paired image bootstrap on the same clean test cells."""
    bb = clean[clean.protocol.isin(PROTOCOL_ORDER)].drop_duplicates(["entry", "flag_limit"])
    outd = {}
    for (model, fl), g in bb.groupby(["model", "flag_limit"]):
        protos = sorted(g.protocol, key=PROTOCOL_ORDER.index)
        for i, lo in enumerate(protos):
            for hi in protos[i + 1:]:
                a, b = f"{model} · {hi}", f"{model} · {lo}"
                outd.setdefault(f"{a} minus {lo}", {})[str(int(fl))] = dict(
                    gain=_paired_gain(clean, a, None, fl, other=b),
                    per_seed=_paired_runs(out, clean, a, b, fl) if out is not None else None)
    return outd

def _slope_vs_accuracy(table, d, placement="pre"):
    """Across the models that ran the largest FlagLimit: Pearson r of clean macro-F1 (mean over seeds) against the blur
    slope there (mean over seeds), with its Fisher-z 95% CI: does robustness to blur follow accuracy?"""
    if not table or "error" in d: return None
    f = max(int(k) for t in table.values() for k in t)
    pts = {e: (table[e][str(f)]["macro_f1"], v[placement]["slope_at_largest_flag_limit"])
           for e, v in d.items() if placement in v and str(f) in table.get(e, {})}
    if (rc := pearson_ci(*zip(*pts.values())) if pts else None) is None: return None
    return dict(flag_limit=int(f), placement=placement, n_models=len(pts), **rc,
                points={e: dict(macro_f1=float(a), slope=float(b)) for e, (a, b) in pts.items()})

def _prior_corrected(P, counts):
    "Predictions re-decided with each class probability divided by its share of the training cells (a balanced prior)."
    cls = sorted(counts)
    prior = np.array([counts[k] for k in cls], float); prior /= prior.sum()
    return P.assign(pred=np.array(cls)[(P[[f"prob_{k}" for k in cls]].to_numpy() / prior).argmax(1)])

def class_mix(res, out, bal_out, minority="others", n_boot=1000) -> dict:
    """(e) Is the drop from 2048 cells per class to all cells the class mix? Per model and seed at the largest FlagLimit:
    the balanced-loss run (`class_weight: balanced`, study folder `bal_out`) against the plain run, and the plain run
    re-decided under a balanced prior (probabilities / training class shares, no retraining); each against the plain
    run and the plain 2048 run, as paired image bootstraps on the same test cells, with the minority class's recall."""
    from sklearn.metrics import recall_score
    bres = collect(bal_out, write=False)
    if not len(bres): return {}
    pick = lambda r: r[(r.status == "ok") & (r.condition == "clean") & r.macro_f1.notna()].assign(entry=lambda d: entry_names(d))
    plain, bal = pick(res), pick(bres)
    top = int(bal.flag_limit.max())
    def rec(P):
        return float(recall_score(P.true, P.pred, labels=[minority], average="macro", zero_division=0))
    _diff = lambda r: dict(diff=r["diff"], image_boot_ci=[r["ci_low"], r["ci_high"]])
    cmp = lambda A, B: _diff(paired_compare(A, B, n_boot=n_boot, seed=0, group_bootstrap=True))
    outd = {}
    for e, g in bal[bal.flag_limit == top].groupby("entry"):
        rows = []
        for r in g.sort_values("seed").itertuples():
            pl = plain[(plain.entry == e) & (plain.flag_limit == top) & (plain.seed == r.seed)]
            if not len(pl): continue
            Pb = load_predictions(bal_out, [r.run_id]); Pb = Pb[Pb.condition == "clean"]
            Pp = load_predictions(out, [pl.run_id.iloc[0]]); Pp = Pp[Pp.condition == "clean"]
            Pc = _prior_corrected(Pp, json.loads(pl.n_train_counts.iloc[0]))
            pc = paired_compare(Pc, Pp, n_boot=n_boot, seed=0, group_bootstrap=True)   # also scores the prior-corrected run
            row = dict(seed=int(r.seed), plain=float(pl.macro_f1.iloc[0]), balanced=float(r.macro_f1),
                       prior_corrected=pc["macro_f1_a"],
                       recall_minority=dict(plain=rec(Pp), balanced=rec(Pb), prior_corrected=rec(Pc)),
                       balanced_minus_plain=cmp(Pb, Pp), prior_corrected_minus_plain=_diff(pc))
            p2 = plain[(plain.entry == e) & (plain.flag_limit == 2048) & (plain.seed == r.seed)]
            if len(p2):
                P2 = load_predictions(out, [p2.run_id.iloc[0]]); P2 = P2[P2.condition == "clean"]
                row.update(plain_2048=float(p2.macro_f1.iloc[0]), recall_minority_2048=rec(P2),
                           balanced_minus_plain_2048=cmp(Pb, P2), prior_corrected_minus_plain_2048=cmp(Pc, P2))
            rows.append(row)
        if rows:
            outd[e] = dict(flag_limit=top, per_seed=rows,
                           balanced_minus_plain=_t_ci([x["balanced"] - x["plain"] for x in rows]),
                           prior_corrected_minus_plain=_t_ci([x["prior_corrected"] - x["plain"] for x in rows]))
    return outd

RECORD_FILES = ("params.json", "predictions.parquet", "output.ipynb", "result.json")   # result.json last: it marks a copy complete

def _run_ok(rd: Path) -> bool:
    "Done as `run_study` judges it (the runner's own test), so a restored run is never run again."
    return _run_status(rd) == "ok"

def _copy_run(src: Path, dst: Path):
    dst.mkdir(parents=True, exist_ok=True)
    for f in RECORD_FILES:   # a copy cut short lacks result.json, so it is neither collected nor taken for done
        if (src / f).is_file(): shutil.copy2(src / f, dst / f)

def _records_dir(p) -> Path:
    "The --records folder, or a one-line error when it cannot be one."
    d = Path(p)
    if d.exists() and not d.is_dir(): raise SystemExit(f"--records {d}: is a file, not a folder; give a folder (e.g. benchmarks/results/run_records/<study>)")
    return d

def restore_records(records: Path, out: Path) -> list:
    """Copy each kept run record (`records/<run id>/`) whose run is missing from `out/runs/` into it, so that `run_study`
    takes the run for done and `collect` counts it: a run folder lost with a checkout is rebuilt from git. Returns the
    run ids restored."""
    got = []
    for rd in sorted(records.glob("*/")) if records.is_dir() else []:
        if not _run_ok(rd) or _run_ok(out / "runs" / rd.name): continue
        _copy_run(rd, out / "runs" / rd.name); got.append(rd.name)
    return got

def keep_records(out: Path, records: Path) -> list:
    """Copy each finished run of `out/runs/` (status ok) that `records` lacks into `records/<run id>/`: its params,
    result rows, predictions and executed notebook, not its weights (a few hundred KB a run, small enough for git).
    Returns the run ids newly kept."""
    got = []
    for rd in sorted((out / "runs").glob("*/")):
        if not _run_ok(rd) or _run_ok(records / rd.name): continue
        _copy_run(rd, records / rd.name); got.append(rd.name)
    return got

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", nargs="+", default=[str(HERE / "crchisto_flaglimit.yaml")])
    ap.add_argument("--out", default=str(HERE.parent / "runs" / "crchisto_flaglimit"))
    ap.add_argument("--workers", type=int, default=None); ap.add_argument("--summarise-only", action="store_true")
    ap.add_argument("--seeds", default=None, help="comma list: run only these seeds of each config now (phases on a slow machine)")
    ap.add_argument("--flag-limits", default=None, help="comma list: run only these FlagLimits of each config now")
    ap.add_argument("--no-backbones", action="store_true", help="run only the scratch models of each config now")
    ap.add_argument("--no-scratch", action="store_true", help="run only the backbones of each config now")
    ap.add_argument("--models", default=None, help="comma list: run only these scratch models of each config now")
    ap.add_argument("--protocols", default=None, help="comma list: run only these backbone protocols of each config now")
    ap.add_argument("--prior", nargs="+", default=None, help="earlier results JSONs whose curves this folder extends: finding (g)")
    ap.add_argument("--records", default=None, help="a folder kept in git (benchmarks/results/run_records/<study>): finished runs "
                    "missing from --out are restored from it first, and each finished run is kept in it (no weights)")
    a = ap.parse_args()
    priors = {Path(p).name: _read_prior(p) for p in a.prior or []}   # read before hours of runs, not after
    out, t0, walls = Path(a.out), time.perf_counter(), {}
    records = _records_dir(a.records) if a.records else None
    if records and (got := restore_records(records, out)): print(f"restored {len(got)} finished runs from {records}: {', '.join(got)}", flush=True)
    try:
        if not a.summarise_only:
            for c in a.config:
                t = time.perf_counter()
                cfg = StudyConfig.from_yaml(c)
                if a.seeds: cfg.seeds = [int(v) for v in a.seeds.split(",")]
                if a.flag_limits: cfg.flag_limits = [v for v in cfg.flag_limits if str(v) in a.flag_limits.split(",")]
                if a.no_backbones: cfg.backbones = []
                if a.no_scratch: cfg.models = []
                if a.models: cfg.models = [m for m in cfg.models if m in a.models.split(",")]
                if a.protocols: cfg.protocols = [p for p in cfg.protocols if p in a.protocols.split(",")]
                if not cfg.protocols: cfg.backbones = []
                if not cfg.flag_limits or not (cfg.models or cfg.backbones): continue
                run_study(cfg, out, workers=a.workers)  # run ids hash each run's own parameters: phases add up to the grid
                walls[Path(c).name] = time.perf_counter() - t
                print(f"{c}: {walls[Path(c).name]:.0f} s", flush=True)
    finally:   # also when the runs stop early (Ctrl-C, a config that fails): what finished is kept
        if records and (got := keep_records(out, records)): print(f"kept {len(got)} finished runs in {records}: {', '.join(got)}", flush=True)
    res = collect(out)
    page = report(out)
    runs = res.groupby("run_id").agg(status=("status", "first"), train_seconds=("train_seconds", "first"))
    f = findings(res, out)
    bal = out.parent / f"{out.name}_balanced"
    if (bal / "runs").is_dir(): f["e_class_mix"] = class_mix(res, out, bal)
    if priors: f["g_against_prior"], f["f_against_prior"] = prior_gains(f["table"], priors), prior_protocol_gains(f["table"], priors)
    p = write_result(out.name, dict(
        configs=[Path(c).read_text() for c in a.config], out_dir=str(out), report=str(page),
        runs=int(len(runs)), runs_ok=int((runs.status == "ok").sum()), train_seconds_total=float(runs.train_seconds.sum()),
        wall_seconds_this_invocation=time.perf_counter() - t0, wall_seconds_per_config=walls, **f))
    print(json.dumps({k: f[k] for k in ("a_scratch_keeps_rising", "b_saturation", "c_vit_vs_cnns")}, indent=1, default=str))
    print(f"wrote {p}; report {page}")

if __name__ == "__main__": main()
