"""Tests for cellnb.figures.findings: results tables built to make each sentence true, then false, and the cases where
the data cannot support a claim (one model, one FlagLimit, one seed, no predictions, no groups, too few test cells,
too few blur sigmas, flagged runs)."""
import numpy as np
import pandas as pd
import pytest
from cellnb.core import CellnbError
from cellnb.figures import findings, per_class_table, positive_class

def _rows(spec, seeds=(0, 1, 2), sigmas=(), jitter=0.01, latency=None, warning=None, device=None):
    """Results rows: spec = {entry: {flag_limit: macro-F1}}; per seed a small fixed jitter; blur rows fall with `slope`."""
    rows = []
    for model, curve in spec.items():
        slope = curve.pop("slope", None) if isinstance(curve, dict) else None
        for fl, f1 in curve.items():
            for s in seeds:
                rid = f"{model}-{fl}-{s}"
                base = f1 + jitter * ((s * 7 + sum(map(ord, model))) % 3 - 1)
                common = dict(run_id=rid, model=model, family="scratch", protocol="scratch", flag_limit=fl, seed=s, status="ok",
                              latency_ms_per_patch=(latency or {}).get(model, np.nan), warning=(warning or {}).get(rid),
                              **({"device": device[model]} if device else {}))
                rows.append(dict(common, condition="clean", sigma=0.0, macro_f1=base, macro_f1_ci_low=base - .03, macro_f1_ci_high=base + .03))
                for pl in ("pre", "post") if sigmas else ():
                    for sg in sigmas:
                        v = base + (slope if slope is not None else -0.1) * np.log2(1 + sg) + 0.002 * s * sg
                        rows.append(dict(common, condition=pl, sigma=sg, macro_f1=v, macro_f1_ci_low=v - .03, macro_f1_ci_high=v + .03))
    return pd.DataFrame(rows)

def _preds(run_ids, n_per_class=40, classes=("a", "b"), groups=8, acc=None, seed=0):
    """Clean predictions of every run on the same test cells; `acc` {run_id: fraction right} (default 0.8)."""
    rng = np.random.default_rng(seed)
    n = n_per_class * len(classes)
    true = np.array(classes * n_per_class)
    parts = []
    for r in run_ids:
        right = rng.random(n) < (acc or {}).get(r, 0.8)
        pred = np.where(right, true, np.roll(true, 1))
        parts.append(pd.DataFrame(dict(cell=np.arange(n), group=[f"g{i % groups}" if groups else f"cell{i}" for i in range(n)],
                                       true=true, pred=pred, condition="clean", sigma=0.0, run_id=r,
                                       **{f"prob_{c}": (pred == c).astype(float) for c in classes})))
    return pd.concat(parts, ignore_index=True)

def _find(sentences, start):
    hit = [s for s in sentences if s.startswith(start)]
    assert len(hit) == 1, (start, sentences)
    return hit[0]

BEST = "At FlagLimit"

# --- runs and flags -----------------------------------------------------------------------------------------------

def test_runs_sentence_counts_flagged_and_reads_old_tables():
    r = _rows({"cnn": {64: .6, 256: .7}})
    assert findings(r)[0] == "6 runs: 6 completed, 0 failed, none flagged."
    assert findings(r.drop(columns="warning"))[0] == "6 runs: 6 completed, 0 failed, none flagged."   # old tables: no column
    assert findings(r.assign(warning=""))[0].endswith("none flagged.")
    f = _rows({"cnn": {64: .6, 256: .7}}, warning={"cnn-64-0": "collapsed: every test cell predicted as 'a'"})
    assert findings(f)[0].startswith("6 runs: 6 completed, 0 failed; 1 of the 6 completed runs is flagged")
    failed = pd.concat([r, pd.DataFrame([dict(run_id="x", model="vit", family="scratch", protocol="scratch", flag_limit=64,
                                              seed=0, condition="clean", sigma=0.0, macro_f1=np.nan, status="failed")])])
    assert findings(failed)[0] == "7 runs: 6 completed, 1 failed, none flagged."

def test_flagged_run_is_named_where_it_is_used_and_only_there():
    w = {"cnn-64-0": "collapsed: every test cell predicted as 'a'"}
    f = findings(_rows({"cnn": {64: .6, 256: .7}, "vit": {256: .8}}, warning=w))
    assert "Caution" not in _find(f, BEST)                      # the best-model sentence uses FlagLimit 256 only
    cnn = _find(f, "cnn, FlagLimit 64 to 256")
    assert "Caution: this rests on 1 flagged run (cnn at FlagLimit 64, seed 0: collapsed: every test cell predicted as 'a')." in cnn
    w2 = {"vit-256-1": "not learned: best validation macro-F1 0.21 <= majority-class baseline 0.24"}
    f2 = findings(_rows({"cnn": {64: .6, 256: .7}, "vit": {256: .8}}, warning=w2))
    assert "Caution: this rests on 1 flagged run (vit at FlagLimit 256, seed 1: not learned" in _find(f2, BEST)
    assert "Caution" not in _find(f2, "cnn, FlagLimit")

# --- best model at the largest FlagLimit ----------------------------------------------------------------------------

def test_best_model_leads_then_level_then_no_ci():
    lead = _find(findings(_rows({"cnn": {256: .60}, "vit": {256: .70}})), BEST)
    assert lead.startswith("At FlagLimit 256 (the largest) the best model is vit, 0.700 [0.670, 0.730] clean macro-F1 (3 seeds); "
                           "the runner-up is cnn, 0.600 [0.570, 0.630] (3 seeds)")
    assert "(paired by seed, n=3): vit leads." in lead
    level = _find(findings(_rows({"cnn": {256: .600}, "vit": {256: .602}}, jitter=0.03)), BEST)
    assert "the two cannot be told apart (the CI includes 0)" in level and "leads" not in level
    one = _find(findings(_rows({"cnn": {256: .60}, "vit": {256: .70}}, seeds=(0,))), BEST)
    assert "with no CI (one seed and no per-cell predictions to pair): this cannot support a ranking." in one
    apart = _rows({"cnn": {256: .60}}, seeds=(0,)).pipe(lambda a: pd.concat([a, _rows({"vit": {256: .7}}, seeds=(1,))]))
    assert "with no CI (no seed in common)" in _find(findings(apart), BEST)

def test_best_model_one_seed_paired_bootstrap_over_the_same_cells():
    r = _rows({"cnn": {256: .60}, "vit": {256: .70}}, seeds=(0,))
    p = _preds(r.run_id.unique(), n_per_class=200, acc={"vit-256-0": 0.95, "cnn-256-0": 0.6})
    s = _find(findings(r, preds=p), BEST)
    assert "(one seed: paired bootstrap of 8 test groups (400 cells); seed-to-seed spread not measured): vit leads." in s
    same = _preds(r.run_id.unique(), n_per_class=200, acc={"vit-256-0": 0.8, "cnn-256-0": 0.8}, seed=3)
    assert "the two cannot be told apart" in _find(findings(r, preds=same), BEST)
    nogroups = _preds(r.run_id.unique(), n_per_class=200, groups=0, acc={"vit-256-0": 0.95, "cnn-256-0": 0.6})
    f = findings(r, preds=nogroups)
    assert "paired bootstrap of 400 test cells, no groups" in _find(f, BEST)
    assert "with no groups (each cell its own, or a single group): intervals resample cells" in f[1]

def test_best_model_cannot_be_ranked_alone_or_on_a_tiny_test_set():
    alone = _find(findings(_rows({"cnn": {64: .5}, "vit": {256: .7}})), "Only one model")
    assert alone.startswith("Only one model ran at FlagLimit 256, the largest: vit, 0.700 [0.670, 0.730] clean macro-F1 (3 seeds)")
    r = _rows({"cnn": {256: .60}, "vit": {256: .70}})
    big, small = _preds(r.run_id.unique(), n_per_class=40), _preds(r.run_id.unique(), n_per_class=20)
    assert "vit leads." in _find(findings(r, preds=big), BEST)
    s = _find(findings(r, preds=small), BEST)
    assert "but the test set is too small to tell (fewer than 30 cells in a class)" in s and "leads." not in s
    f = findings(r, preds=small)
    assert "too few to support claims about single classes or differences between models" in f[1]
    assert "too few" not in findings(r, preds=small, min_cells=10)[1]

def test_test_set_sentence():
    r = _rows({"cnn": {256: .6}})
    assert findings(r)[1].startswith("No per-cell predictions were read")
    f = findings(r, preds=_preds(r.run_id.unique(), n_per_class=50, classes=("a", "b", "c")))
    assert f[1] == ("The test set holds 150 cells of 3 classes (smallest: 'a', 50 cells) from 8 groups; "
                    "the per-class and one-seed intervals resample groups.")
    one_group = _preds(r.run_id.unique(), n_per_class=50, groups=1)
    assert "with no groups" in findings(r, preds=one_group)[1]

# --- per class ------------------------------------------------------------------------------------------------------

def test_positive_class_rule():
    assert positive_class({"negative": 510, "positive": 80}) == "positive"
    assert positive_class({"positive": 80, "negative": 510}) == "positive"
    assert positive_class({"a": 10, "b": 10}) == "b"
    assert positive_class({"a": 1, "b": 2, "c": 3}) is None and positive_class({"a": 4}) is None

def test_per_class_sentence_two_classes_names_the_positive_class():
    r = _rows({"cnn": {256: .6}})
    p = _preds(r.run_id.unique(), n_per_class=40)
    rare = pd.concat([p, p[p.true == "a"].assign(cell=lambda d: d.cell + 1000)])   # 'b' is now the rarer class
    s = _find(findings(r, preds=rare), "Two classes")
    assert s.startswith("Two classes: the positive class is 'b', the one with fewer test cells (40 of 120; "
                        "on a tie it would be the second class). cnn's F1 on it is ")
    rare_a = pd.concat([p, p[p.true == "b"].assign(cell=lambda d: d.cell + 1000)])
    assert "the positive class is 'a'" in _find(findings(r, preds=rare_a), "Two classes")

def test_per_class_sentence_many_classes_names_the_weakest():
    r = _rows({"cnn": {256: .6}}, seeds=(0,))
    p = _preds(r.run_id.unique(), n_per_class=60, classes=("x", "y", "z"))
    p.loc[p.true == "z", "pred"] = "x"            # z is never right
    s = _find(findings(r, preds=p), "Per class")
    assert s.startswith("Per class, cnn at FlagLimit 256 is weakest on 'z': F1 0.000 [0.000, 0.000] (60 test cells)")
    p2 = p.copy(); p2.loc[p2.true == "z", "pred"] = "z"; p2.loc[p2.true == "y", "pred"] = "x"
    assert "weakest on 'y'" in _find(findings(r, preds=p2), "Per class")
    few = _preds(r.run_id.unique(), n_per_class=10, classes=("x", "y", "z"))
    assert "too few test cells to pin down" in _find(findings(r, preds=few), "Per class")

def test_per_class_sentence_reads_per_class_table(tmp_path):
    r = _rows({"cnn": {256: .6}})
    (tmp_path/"runs").mkdir()
    p = _preds(r.run_id.unique(), n_per_class=40, classes=("x", "y", "z"))
    for rid, g in p.groupby("run_id"):
        (tmp_path/"runs"/rid).mkdir(); g.to_parquet(tmp_path/"runs"/rid/"predictions.parquet")
    r.to_parquet(tmp_path/"results.parquet")
    pc = per_class_table(tmp_path, n_boot=200)
    assert findings(r, tmp_path, pc)[3] == findings(r, tmp_path, None, n_boot=200)[3]

# --- still rising, and 95% of the best --------------------------------------------------------------------------------

def test_rising_flat_falling_and_one_flag_limit():
    f = findings(_rows({"cnn": {64: .50, 256: .60, 100000: .70}}))
    s = _find(f, "cnn, FlagLimit 256 to 100000")
    assert "+0.100 [+0.100, +0.100] (paired by seed, n=3): still rising;" in s
    assert s.endswith("it reaches 95% of its best (0.700 at FlagLimit 100000) at FlagLimit 100000.")
    flat = _find(findings(_rows({"cnn": {64: .50, 256: .69, 512: .70}}, jitter=0.0).assign(
        macro_f1=lambda d: d.macro_f1 + np.where(d.flag_limit == 512, [0.02, -0.02, 0.0] * 3, 0.0))), "cnn, FlagLimit 256 to 512")
    assert "no clear rise (the CI includes 0)" in flat and "reaches 95% of its best (0.700 at FlagLimit 512) at FlagLimit 256" in flat
    down = _find(findings(_rows({"cnn": {64: .50, 256: .70, 512: .60}})), "cnn, FlagLimit 256 to 512")
    assert ": falling;" in down
    one = _find(findings(_rows({"cnn": {256: .60}})), "cnn ran at one FlagLimit only (256)")
    assert "whether it still rises with more training cells cannot be said" in one
    single = _find(findings(_rows({"cnn": {64: .50, 256: .60}}, seeds=(0,))), "cnn, FlagLimit 64 to 256")
    assert "with no CI (one seed and no per-cell predictions to pair): whether it still rises cannot be said" in single

def test_rising_uses_all_label_and_one_seed_bootstrap():
    r = _rows({"cnn": {64: .50, 100000: .70}}, seeds=(0,))
    r["n_train_counts"] = np.where(r.flag_limit == 64, '{"a": 64, "b": 64}', '{"a": 300, "b": 900}')
    p = _preds(r.run_id.unique(), n_per_class=200, acc={"cnn-64-0": 0.6, "cnn-100000-0": 0.95})
    s = _find(findings(r, preds=p), "cnn, FlagLimit 64 to all")
    assert "(one seed: paired bootstrap of 8 test groups (400 cells); seed-to-seed spread not measured): still rising;" in s

# --- blur slopes --------------------------------------------------------------------------------------------------------

def test_blur_slopes_differ_then_cannot_be_told_apart():
    sig = (0.4, 0.8, 1.6)
    f = findings(_rows({"cnn": {256: .7, "slope": -0.30}, "vit": {256: .7, "slope": -0.05}}, sigmas=sig))
    post = _find(f, "Blur after the resize to 40 px (FlagLimit 256, sigma 0.4, 0.8, 1.6")
    assert "steepest cnn -0.29" in post and "shallowest vit -0.04" in post and "(paired by seed, n=3): the slopes differ." in post
    same = findings(_rows({"cnn": {256: .7, "slope": -0.10}, "vit": {256: .7, "slope": -0.10}}, sigmas=sig))
    assert "the slopes cannot be told apart (the CI includes 0)" in _find(same, "Blur after")
    assert _find(same, "Blur before the resize to 40 px")

def test_blur_slopes_need_four_points_and_blur_rows():
    few = findings(_rows({"cnn": {256: .7, "slope": -0.30}, "vit": {256: .7, "slope": -0.05}}, sigmas=(0.8, 1.6)))
    s = _find(few, "Blur after")
    assert "the slopes rest on 3 points per run (clean and 2 sigmas), too few to support a slope" in s and "differ" not in s
    assert "No blur evaluations in the results: robustness to blur is not assessed." in findings(_rows({"cnn": {256: .7}}))

def test_blur_one_seed_compares_fit_cis():
    sig = (0.4, 0.8, 1.2, 1.6)
    f = findings(_rows({"cnn": {256: .7, "slope": -0.30}, "vit": {256: .7, "slope": -0.05}}, sigmas=sig, seeds=(0,)))
    assert "one seed each: the fits' CIs do not overlap, so the slopes differ." in _find(f, "Blur after")

# --- cost ---------------------------------------------------------------------------------------------------------------

def test_cost_ratios():
    lat = {"cnn": 0.1, "vit": 0.5, "uni": 20.0}
    f = findings(_rows({"cnn": {256: .6}, "vit": {256: .8}, "uni": {256: .7}}, latency=lat))
    assert f[-1] == ("Cost (latency per patch, batch 1, FlagLimit 256): cnn is the cheapest at 0.1 ms; uni takes 20 ms, "
                     "200x as long; the best model, vit, takes 0.5 ms (5x the cheapest).")
    lat2 = {"cnn": 0.1, "vit": 30.0, "uni": 20.0}
    assert findings(_rows({"cnn": {256: .6}, "vit": {256: .8}, "uni": {256: .7}}, latency=lat2))[-1].endswith("the best model is the dearest.")
    assert findings(_rows({"cnn": {256: .6}}))[-1] == "No latency was measured: inference costs are not compared."
    dev = findings(_rows({"cnn": {256: .6}, "vit": {256: .8}}, latency=lat, device={"cnn": "cpu", "vit": "cuda"}))
    assert dev[-1].endswith("The latencies were measured on different devices (cpu, cuda), so the ratios mix machines.")

def test_nothing_completed_and_bad_input():
    r = _rows({"cnn": {64: .6}}).assign(status="failed", macro_f1=np.nan)
    assert findings(r) == ["3 runs: 0 completed, 3 failed, none flagged.", "No run completed a clean evaluation: there is nothing to compare."]
    with pytest.raises(CellnbError, match="lacks columns"): findings(pd.DataFrame({"model": ["cnn"]}))
    with pytest.raises(CellnbError, match="no run_id column"):
        findings(_rows({"cnn": {64: .6}}), preds=_preds(["x"]).drop(columns="run_id"))

def test_tables_without_ci_columns_say_no_ci():
    r = _rows({"cnn": {256: .60}, "vit": {256: .70}}).drop(columns=["macro_f1_ci_low", "macro_f1_ci_high"])
    s = _find(findings(r), BEST)
    assert "vit, 0.700 (no CI) clean macro-F1 (3 seeds)" in s and "nan" not in s and "vit leads." in s

def test_blur_difference_not_claimed_on_a_tiny_test_set():
    r = _rows({"cnn": {256: .7, "slope": -0.30}, "vit": {256: .7, "slope": -0.05}}, sigmas=(0.4, 0.8, 1.6))
    big, small = _preds(r.run_id.unique(), n_per_class=40), _preds(r.run_id.unique(), n_per_class=20)
    assert _find(findings(r, preds=big), "Blur after").endswith("(paired by seed, n=3): the slopes differ.")
    assert _find(findings(r, preds=small), "Blur after").endswith(
        "(paired by seed, n=3): the CI excludes 0, but the test set is too small to tell (fewer than 30 cells in a class).")
