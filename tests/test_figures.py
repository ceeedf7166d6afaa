"""Tests for cellnb.figures: chart shapes, the offline report, and (when Debian chromium is installed) that it renders."""
import os, re, json, shutil, subprocess, importlib.util
from pathlib import Path
import numpy as np
import pandas as pd
import pytest
from cellnb.core import CellnbError
from cellnb import figures as F

CLASSES = ["a", "b", "c"]

def _has(mod): return importlib.util.find_spec(mod) is not None

def _fake_study(out, failed=0, ok=True):
    """A study folder shaped like cellnb-study's output, with generated numbers (for chart-shape tests only)."""
    out = Path(out); out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows, k = [], 0
    entries = [("cnn", "scratch", "scratch", 0.05), ("custom_vit", "scratch", "scratch", 0.2), ("effnet_lite0_in1k", "foundation", "linear_probe", 5.0)]
    for model, fam, proto, lat in (entries if ok else []):
        for fl in (64, 128, 256):
            for seed in (0, 1):
                rid = f"{k:012x}"; k += 1
                base = 0.4 + 0.1*np.log2(fl/64) + rng.normal(0, 0.02)
                conds = [("clean", 0.0)] + [(pl, s) for pl in ("pre", "post") for s in (0.8, 1.6)]
                for cond, sg in conds:
                    f1 = base - (0.05 if cond == "post" else 0.08)*np.log2(1 + sg)
                    rows.append(dict(run_id=rid, dataset="synthetic", model=model, family=fam, protocol=proto, flag_limit=fl,
                                     n_train_per_class=fl, seed=seed, condition=cond, sigma=sg, sigma_40px=sg, accuracy=f1 + 0.03, macro_f1=f1,
                                     weighted_f1=f1, macro_f1_ci_low=f1 - 0.04, macro_f1_ci_high=f1 + 0.04, accuracy_ci_low=f1 - 0.01,
                                     accuracy_ci_high=f1 + 0.07, balanced_accuracy=f1, ece=0.05, params=1e5, gflops=0.01,
                                     latency_ms_per_patch=lat, train_seconds=1.0, status="ok", error=None))
                n = 60
                true = rng.integers(0, 3, n); pred = np.where(rng.random(n) < base, true, rng.integers(0, 3, n))
                pr = pd.DataFrame({"cell": np.arange(n), "group": "g", "true": true, "pred": pred,
                                   **{f"prob_{c}": rng.random(n) for c in CLASSES}, "condition": "clean", "sigma": 0.0, "run_id": rid})
                (out/"runs"/rid).mkdir(parents=True, exist_ok=True)
                pr.to_parquet(out/"runs"/rid/"predictions.parquet")
    for i in range(failed):
        rows.append(dict(run_id=f"f{i:011x}", dataset="synthetic", model="vit", family="scratch", protocol="scratch", flag_limit=64,
                         n_train_per_class=None, seed=i, condition="clean", sigma=0.0, accuracy=np.nan, macro_f1=np.nan,
                         status="failed", error="Traceback ...\nCellnbError: loss became NaN at epoch 1 <b>"))
    pd.DataFrame(rows).to_parquet(out/"results.parquet")
    np.savez(out/"samples.npz", images=rng.integers(0, 255, (12, 3, 48, 48), dtype=np.uint8), labels=np.arange(12) % 3, classes=np.array(CLASSES))
    (out/"study.yaml").write_text("dataset: synthetic\nmodels: [cnn, custom_vit]\nname: fake study\n")
    return out

@pytest.fixture(scope="module")
def study(tmp_path_factory): return _fake_study(tmp_path_factory.mktemp("study"), failed=1)

def test_missing_and_empty_results(tmp_path):
    with pytest.raises(CellnbError, match="run cellnb-study"): F.report(tmp_path)
    pd.DataFrame(columns=["run_id"]).to_parquet(tmp_path/"results.parquet")
    with pytest.raises(CellnbError, match="run cellnb-study"): F.report(tmp_path)
    (tmp_path/"results.parquet").write_bytes(b"not parquet")
    with pytest.raises(CellnbError, match="cannot be read"): F.load_results(tmp_path)

def test_chart_shapes(study):
    r = F.load_results(study)
    sa = F.speed_accuracy(r).to_dict()
    assert F._marks(sa) == ["rule", "point", "text"]
    assert sa["layer"][1]["encoding"]["x"]["scale"]["type"] == "log"
    assert "FlagLimit 256" in sa["title"]
    assert "FlagLimit 64" in F.speed_accuracy(r, flag_limit=64).to_dict()["title"]
    with pytest.raises(CellnbError, match="available: 64, 128, 256"): F.speed_accuracy(r, flag_limit=100)
    sc = F.scaling_curves(r).to_dict()
    assert F._marks(sc) == ["area", "line", "point"]
    assert sc["layer"][1]["encoding"]["x"]["scale"] == {"type": "log", "base": 2}
    data = pd.DataFrame(next(iter(sc["datasets"].values())))
    assert len(data) == 3*3 and set(data["n_runs"]) == {2}   # 3 entries x 3 FlagLimits, 2 seeds each
    bb = F.blur_bars(r).to_dict()
    assert F._marks(bb) == ["bar", "rule"] and "sigma 1.6" in bb["title"]
    bd = pd.DataFrame(next(iter(bb["datasets"].values())))
    assert sorted(bd["condition"].unique()) == ["clean", "post", "pre"] and len(bd) == 9
    assert "sigma 0.8" in F.blur_bars(r, sigma=0.8).to_dict()["title"]
    cm = F.confusion_matrices(study).to_dict()
    assert "facet" in cm and F._marks(cm) == ["rect", "text"]
    cd = pd.DataFrame(next(iter(cm["datasets"].values())))
    assert len(cd) == 3*9 and set(cd["true"]) == set(CLASSES)   # best run per entry, every cell of 3x3 incl. zeros
    assert cd.groupby("entry")["count"].sum().eq(60).all()
    cs = F.contact_sheet(*F.load_samples(study)).to_dict()
    assert F._marks(cs) == ["image"]

def test_best_runs_and_tables(study):
    r = F.load_results(study)
    b = F.best_runs(r)
    assert len(b) == 3 and b.groupby("entry").size().eq(1).all()
    t = F.summary_table(r)
    assert list(t.columns[:5]) == ["model", "family", "FL 64", "FL 128", "FL 256"] and len(t) == 3
    f = F.failed_table(r)
    assert len(f) == 1 and f["error"][0].startswith("CellnbError: loss became NaN")

@pytest.mark.skipif(not _has("cellnb.robustness"), reason="cellnb.robustness not exported yet")
def test_degradation_slopes(study):
    r = F.load_results(study)
    sl = F.run_slopes(r)
    assert sl["run_id"].nunique() == 18
    d = F.degradation_slopes(r).to_dict()
    assert F._marks(d) == ["rule", "rule", "point"]

@pytest.fixture(scope="module")
def page(study): return F.report(study, title="test <study>")

def test_report(study, page):
    text = page.read_text()
    chk = F.report_check(page)
    want = list(F.FIGURES) if _has("cellnb.robustness") else [k for k in F.FIGURES if k != "degradation_slopes"]
    assert chk["figures"] == want and chk["specs"] == want
    assert chk["external"] == []
    assert not re.search(r'<script[^>]+src=', text)
    assert "test &lt;study&gt;" in text and "loss became NaN at epoch 1 &lt;b&gt;" in text   # escaped
    assert "dataset: synthetic" in text and "cpu_count" in text
    for name in want:
        assert (study/"figures"/f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert "<svg" in (study/"figures"/f"{name}.svg").read_text()[:500]
    assert not list(study.glob(".report.html.*")) and not list((study/"figures").glob(".*tmp"))

def test_report_only_failed(tmp_path):
    out = _fake_study(tmp_path, failed=2, ok=False)
    chk = F.report_check(F.report(out))
    assert chk["figures"] == ["contact_sheet"]     # the cells can still be shown; no scores to draw
    text = (out/"report.html").read_text()
    assert "Failed runs (2)" in text and text.count("loss became NaN") == 2
    assert "not drawn: no completed clean evaluations" in text
    assert "<title>fake study</title>" in text   # the title defaults to the study's name

def _render(page, tmp_path):
    prof = tmp_path/"chrome-profile"
    cmd = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", "--no-first-run", "--disable-dev-shm-usage", f"--user-data-dir={prof}",
           "--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=<-loopback>", "--host-resolver-rules=MAP * ~NOTFOUND",
           "--virtual-time-budget=10000", "--dump-dom", page.as_uri()]
    if shutil.which("unshare") and subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0:
        cmd = ["unshare", "-n"] + cmd   # a network namespace with no interfaces: the network is really off
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout

@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian chromium not installed (apt-get install chromium)")
def test_report_renders_offline_in_chromium(page, tmp_path):
    dom = _render(page, tmp_path)
    want = F.report_check(page)["figures"]
    assert want
    tags = re.findall(r'<div[^>]*data-figure="[^"]*"[^>]*>', dom)
    assert [re.search(r'data-figure="([^"]*)"', t).group(1) for t in tags] == want
    for t in tags: assert 'data-rendered="yes"' in t, f"figure did not render: {t}"
    # every figure div holds an svg drawn by vega
    blocks = re.split(r'(?=<div[^>]*data-figure=")', dom)[1:]
    assert len(blocks) == len(want) and all("<svg" in b for b in blocks)

def _tiny_pipeline(out):
    """A real 2-model x 2-FlagLimit, 1-epoch study written in the sweep's layout (in-process: no papermill)."""
    for m in ("cellnb.synthetic", "cellnb.models", "cellnb.train", "cellnb.robustness", "cellnb.cost", "cellnb.sweep"):
        if not _has(m): pytest.skip(f"{m} not exported yet")
    from cellnb.core import atomic_write_json, seed_everything
    from cellnb.synthetic import synthetic_ihc
    from cellnb.data import group_split, flag_limit
    from cellnb.train import fit_cell_model
    from cellnb.robustness import blur_sweep
    from cellnb.cost import model_cost
    from cellnb.sweep import collect, write_samples, StudyConfig
    out = Path(out); (out/"runs").mkdir(parents=True)
    cs = synthetic_ihc(24, seed=0)
    train_all, valid, test = group_split(cs, seed=0)
    for model, fls in (("cnn", (8, 16)), ("custom_vit", (8,))):
        cost = None
        for fl in fls:
            seed_everything(0)
            fitted = fit_cell_model("scratch", model, flag_limit(train_all, fl, seed=0), valid, epochs=1, seed=0, device="cpu",
                                    bs=32, progress=False)
            rid = f"{model}-{fl}"
            fields = dict(run_id=rid, dataset="synthetic", model=model, family=fitted.family, protocol="scratch", flag_limit=fl,
                          n_train_per_class=fl, seed=0, train_seconds=fitted.train_seconds)
            rows, preds = blur_sweep(fitted, test, sigmas=(0, 0.8, 1.6), placements=("pre", "post"), fields=fields, n_boot=20, seed=0)
            cost = cost or model_cost(fitted.model, 40, batch_sizes=(1,), device="cpu", warmup=1, repeats=2)
            rows = rows.assign(params=cost["params"], gflops=cost["gflops"], latency_ms_per_patch=cost["latency_ms_per_patch"], status="ok")
            (out/"runs"/rid).mkdir()
            preds.assign(run_id=rid).to_parquet(out/"runs"/rid/"predictions.parquet")
            atomic_write_json(out/"runs"/rid/"result.json", rows.to_dict("records"))
    write_samples(cs, out/"samples.npz")
    StudyConfig(models=["cnn", "custom_vit"], flag_limits=[8, 16], seeds=[0], n_per_class=24, name="tiny real study").to_yaml(out/"study.yaml")
    return collect(out)

def test_report_from_tiny_real_pipeline(tmp_path):
    res = _tiny_pipeline(tmp_path)
    assert len(res) == 3*5 and set(res["status"]) == {"ok"}
    page = F.report(tmp_path)
    chk = F.report_check(page)
    assert chk["figures"] == list(F.FIGURES) and chk["specs"] == chk["figures"] and chk["external"] == []
    assert "<title>tiny real study</title>" in page.read_text()
    for name in F.FIGURES: assert (tmp_path/"figures"/f"{name}.png").stat().st_size > 1000
    if shutil.which("chromium"):
        tags = re.findall(r'<div[^>]*data-figure="[^"]*"[^>]*>', _render(page, tmp_path))
        assert len(tags) == len(F.FIGURES) and all('data-rendered="yes"' in t for t in tags)

def test_per_class_table_written_reused_and_refreshed(tmp_path):
    out = _fake_study(tmp_path)
    pc = F.per_class_table(out, n_boot=200)
    assert len(pc) == 18 * 3 and list(pc.columns[:9]) == F.PER_CLASS_KEYS
    assert set(pc["bootstrap"]) == {"cell"}            # one group 'g' for every cell: no groups to resample
    assert not pc["positive"].any() and set(pc["class"]) == set(CLASSES)
    f = out/F.PER_CLASS_FILE
    m0 = f.stat().st_mtime_ns
    again = F.per_class_table(out, n_boot=200)
    assert f.stat().st_mtime_ns == m0 and again.equals(pc)          # reused
    # a warning written into the results later shows in the table without recomputing it
    r = F.load_results(out)
    rid = r.run_id.iloc[0]
    r.assign(warning=np.where(r.run_id == rid, "collapsed: every test cell predicted as 'a'", None)).to_parquet(out/"results.parquet")
    w = F.per_class_table(out, n_boot=200)
    assert f.stat().st_mtime_ns == m0 and set(w.loc[w.run_id == rid, "warning"]) == {"collapsed: every test cell predicted as 'a'"}
    assert set(w.loc[w.run_id != rid, "warning"]) == {""}
    # rewritten predictions (a rerun), another bootstrap: recomputed
    p = out/"runs"/rid/"predictions.parquet"
    pd.read_parquet(p).assign(pred=0).to_parquet(p)
    os.utime(p, ns=(m0 + 10**9, m0 + 10**9))
    re1 = F.per_class_table(out, n_boot=200)
    assert f.stat().st_mtime_ns != m0 and re1.loc[(re1.run_id == rid) & (re1["class"] == "a"), "recall"].item() == 1.0
    m1 = f.stat().st_mtime_ns
    F.per_class_table(out, n_boot=100)
    assert f.stat().st_mtime_ns != m1

def test_per_class_two_classes_names_positive(tmp_path):
    out = tmp_path; (out/"runs"/"r1").mkdir(parents=True)
    n_pos, n_neg = 40, 200
    true = np.array(["negative"] * n_neg + ["positive"] * n_pos)
    preds = pd.DataFrame(dict(cell=np.arange(len(true)), group=[f"tile{i % 10}" for i in range(len(true))], true=true, pred=true,
                              prob_negative=1.0, prob_positive=0.0, condition="clean", sigma=0.0))
    preds.loc[:9, "pred"] = "positive"
    preds.to_parquet(out/"runs"/"r1"/"predictions.parquet")
    pd.DataFrame([dict(run_id="r1", model="cnn", family="scratch", protocol="scratch", flag_limit=64, seed=0, condition="clean",
                       sigma=0.0, macro_f1=0.9, status="ok")]).to_parquet(out/"results.parquet")
    pc = F.per_class_table(out, n_boot=200)
    assert pc.set_index("class")["positive"].to_dict() == {"negative": False, "positive": True}
    assert set(pc["bootstrap"]) == {"group"}
    assert F.per_class_summary(pc)["class"].tolist() == ["negative", "positive (positive)"]
    labels = pd.DataFrame(next(iter(F.per_class_f1(pc).to_dict()["datasets"].values())))["label"]
    assert "positive (positive)" in set(labels)
    text = F.report(out, images=False).read_text()
    assert "Two classes: the positive class is &#x27;positive&#x27;, the one with fewer test cells" in text
    assert "Two classes: the positive class is &#x27;positive&#x27;, the one with fewer test cells (40 of 240;" in text   # findings too

def test_flagged_runs_in_tables_and_best_runs(tmp_path):
    out = _fake_study(tmp_path)
    r = F.load_results(out)
    best = F.best_runs(r).set_index("entry")["run_id"]
    top = best["cnn"]
    flagged = r.assign(warning=np.where(r.run_id == top, "collapsed: every test cell predicted as 'a' <b>", None))
    assert F.best_runs(flagged).set_index("entry")["run_id"]["cnn"] != top     # the best unflagged run
    every = r.assign(warning=np.where(r.model == "cnn", "not learned", None))
    assert F.best_runs(every).set_index("entry")["run_id"]["cnn"] == top       # all flagged: the best of them
    t = F.flagged_table(flagged)
    assert t.to_dict("records") == [dict(run_id=top, model="cnn", protocol="scratch", flag_limit=str(r.loc[r.run_id == top, "flag_limit"].iloc[0]),
                                         seed=int(r.loc[r.run_id == top, "seed"].iloc[0]), warning="collapsed: every test cell predicted as 'a' <b>")]
    s = F.summary_table(flagged).set_index("model")["flagged runs"]
    assert s.to_dict() == {"cnn": 1, "custom_vit": 0, "effnet_lite0_in1k · linear_probe": 0}
    assert "flagged runs" not in F.summary_table(r) and len(F.flagged_table(r)) == 0 and len(F.flagged_table(r.drop(columns=[c for c in ("warning",) if c in r]))) == 0

def test_report_findings_flagged_and_per_class_sections(tmp_path):
    out = _fake_study(tmp_path, failed=1)
    r = F.load_results(out)
    rid = F.best_runs(r).set_index("entry")["run_id"]["custom_vit"]
    r.assign(warning=np.where(r.run_id == rid, "collapsed: every test cell predicted as 'b' <i>", "")).to_parquet(out/"results.parquet")
    text = F.report(out, images=False).read_text()
    i_find, i_fig = text.index("<h2>Findings</h2>"), text.index("<h2>Figures</h2>")
    assert i_find < i_fig
    block = text[i_find:i_fig]
    assert "19 runs: 18 completed, 1 failed; 1 of the 18 completed runs is flagged" in block
    assert "Caution: this rests on 1 flagged run (custom_vit at FlagLimit 256" in block
    assert "collapsed: every test cell predicted as &#x27;b&#x27; &lt;i&gt;" in block      # escaped
    assert "(1 completed, " not in text and "18 completed, 1 failed, 1 flagged)" in text
    assert "<h2>Flagged runs (1)</h2>" in text and "1 of the 18 completed runs is flagged" in text
    j = text.index("<h2>Flagged runs (1)</h2>")
    assert rid in text[j:j + 3000] and "&lt;i&gt;" in text[j:j + 3000]
    assert "<h2>Per-class results</h2>" in text and (out/F.PER_CLASS_FILE).exists()
    cm = pd.DataFrame(next(iter(F.confusion_matrices(out).to_dict()["datasets"].values())))
    assert all(re.search(r"\(FlagLimit \d+, seed \d\)$", e) for e in cm["entry"].unique())   # the shown run, unflagged

def test_per_class_table_skips_damaged_or_foreign_predictions(tmp_path):
    out = _fake_study(tmp_path)
    runs = sorted(p.name for p in (out/"runs").iterdir())
    (out/"runs"/runs[0]/"predictions.parquet").write_bytes(b"not parquet")
    p = out/"runs"/runs[1]/"predictions.parquet"
    pd.read_parquet(p).assign(true=7).to_parquet(p)          # a class index outside the model's 3 classes
    with pytest.warns(UserWarning) as rec:
        pc = F.per_class_table(out, n_boot=50)
    msgs = " | ".join(str(w.message) for w in rec)
    assert "is damaged" in msgs and "outside 0..2" in msgs
    assert set(pc["run_id"]) == set(runs[2:]) and len(pc) == 16 * 3
