"The blur study's summary (benchmarks/crchisto_study/crchisto_blur.py) against sklearn and numpy on made-up runs."
import sys
from pathlib import Path
import numpy as np, pandas as pd, pytest
from sklearn.metrics import f1_score

sys.path[:0] = [str(Path(__file__).resolve().parents[1] / "benchmarks" / "crchisto_study")]
import crchisto_blur as cb   # noqa: E402

CLASSES = ["a", "b", "c"]
SIGMAS = (0.5, 1.0, 1.6, 2.4)

def _run(rid, model, protocol, input_size, decay, rng):
    "One run's rows and predictions: accuracy falls with sigma_40px at rate `decay`; post on a 224-px model is milder."
    n, groups = 300, [f"img{i}" for i in range(10)]
    true = rng.choice(CLASSES, n); group = rng.choice(groups, n)
    conds = [("clean", 0.0)] + [(p, s) for p in ("source", "pre", "post") for s in SIGMAS]
    rows, preds = [], []
    for c, s in conds:
        s40 = s * 40 / input_size if c == "post" else s
        p_ok = 0.9 * np.exp(-decay * s40)
        pred = np.where(rng.random(n) < p_ok, true, rng.choice(CLASSES, n))
        preds.append(pd.DataFrame(dict(cell=np.arange(n), group=group, true=true, pred=pred, condition=c, sigma=s, run_id=rid)))
        rows.append(dict(run_id=rid, model=model, protocol=protocol, family="scratch" if protocol == "scratch" else "pretrained",
                         seed=0, condition=c, sigma=s, sigma_40px=s40, input_size=input_size, train_seconds=1.0, status="ok"))
    return rows, preds

@pytest.fixture(scope="module")
def study():
    rng = np.random.default_rng(0)
    r1, p1 = _run("r1", "cnn", "scratch", 40, 0.6, rng)
    r2, p2 = _run("r2", "bb", "linear_probe", 224, 0.6, rng)
    rows = pd.DataFrame(r1 + r2); rows["entry"] = np.where(rows.protocol == "scratch", rows.model, rows.model + " · " + rows.protocol)
    preds = pd.concat(p1 + p2, ignore_index=True)
    rows["n_test"] = 300
    return rows, preds, cb.bootstrap_scores(rows, preds, n_boot=200)

def test_macro_f1_per_condition_is_sklearns(study):
    rows, preds, scores = study
    for rid, s in scores.items():
        for k, (c, sg) in enumerate(s["conds"]):
            q = preds[(preds.run_id == rid) & (preds.condition == c) & (preds.sigma == sg)]
            assert s["point"][k] == pytest.approx(f1_score(q.true, q.pred, average="macro", labels=CLASSES))
        assert s["boot"].shape == (200, 13) and np.isfinite(s["boot"]).all()

def test_slopes_are_ols_on_log2_and_answers_hold(study):
    rows, preds, scores = study
    sl = cb.entry_slopes(rows, scores)
    s = scores["r1"]; idx = [i for i, (c, _) in enumerate(s["conds"]) if c in ("clean", "pre")]
    ref = np.polyfit(np.log2(1 + s["sigma_40px"][idx]), s["point"][idx], 1)[0]
    assert sl[("cnn", "pre", "sigma_40px")]["slope"] == pytest.approx(ref)
    f = cb.answers(rows, scores, sl, 200)
    b = f["b_post_resize_flatters"]
    assert b["cnn"]["post_equals_pre"] and not b["bb · linear_probe"]["post_equals_pre"]
    # post on a 224-px input is a milder blur at the same sigma: the made-up backbone keeps more of its accuracy there
    assert b["bb · linear_probe"]["post_minus_pre"] > 0.1 and b["bb · linear_probe"]["ci"][0] > 0
    # on the physical axis both degrade at the same made-up rate: the slope difference's CI holds zero
    lo, hi = f["c_equal_physical_blur"]["bb · linear_probe"]["cnn"]["pre"]["ci"]
    assert lo < 0 < hi

def test_slope_against_clean_accuracy_needs_four_entries(study):
    "r of slope against clean macro-F1 is only given over four or more entries (two made-up ones here give none)."
    rows, preds, scores = study
    f = cb.answers(rows, scores, cb.entry_slopes(rows, scores), 200)
    assert f["a_slope_vs_clean"] == {}
