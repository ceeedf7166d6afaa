"""CRCHisto, image-grouped 2-fold cross-validation of the scratch architectures and the EfficientNet-Lite0 backbone.

Reads benchmarks/crchisto_study/crchisto_cv.yaml. Per model and fold: fit on the fold's training images (a tenth of them held out
for model selection), predict the other fold. Out-of-fold predictions are pooled (each cell predicted once) for
accuracy, macro-F1 and weighted-F1 with 95% group-bootstrap CIs (resampling images); the per-fold values are kept
too. Writes benchmarks/results/crchisto_cv.json (best_weighted_f1, best_model, per-model table) after every model,
so a long run can be stopped and resumed (--resume skips models already in the JSON).
Usage: python benchmarks/crchisto_study/crchisto_cv.py [--config benchmarks/crchisto_study/crchisto_cv.yaml] [--only cnn,custom_vit] [--resume] [--device cpu] [--threads 1]
       python benchmarks/crchisto_study/crchisto_cv.py --rescore cnn/scratch/16ep --tta   (saved fold models; several keys: an ensemble)
       python benchmarks/crchisto_study/crchisto_cv.py --compare A,B   (paired image bootstrap of B - A from the saved fold probabilities)
       python benchmarks/crchisto_study/crchisto_cv.py --compare cnn/scratch/30ep,crchisto_cv_gpu:effnet_lite0_in1k/full_ft
           (STEM:KEY names an entry of another config with the same folds, e.g. a GPU run's probabilities, unpacked
           with `tar xzf crchisto_cv_gpu_probs.tgz -C benchmarks/runs`; the comparison is kept in --config's JSON)
       python benchmarks/crchisto_study/crchisto_cv.py --config benchmarks/crchisto_study/crchisto_cv_gpu.yaml --dry-run   (check a config, list its runs)
A config writes benchmarks/results/<config name>.json and keeps its fold models in benchmarks/runs/<config name>/.
Entries may set their own crop (the same cells and folds, cut wider or narrower), augment strengths and label_smoothing.
Training and --rescore keep each fold model's test probabilities next to it (test_probs[_tta].npy), so pooling the
folds of a --fold run, or an ensemble of saved models, costs no second prediction.
Several processes may share the JSON (each with its own --only); every write merges what the others wrote.
"""
import argparse, json, time, yaml
from pathlib import Path
import numpy as np, pandas as pd, torch
from sklearn.metrics import f1_score, accuracy_score
import sys as _sys, pathlib as _pl; _sys.path[:0] = [str(_pl.Path(__file__).resolve().parents[1]), str(_pl.Path(__file__).resolve().parents[1] / "crchisto_study")]   # _common, the study scripts
from _common import write_result, RESULTS
from cellnb.core import crchisto_path, get_device
from cellnb.data import group_folds, group_split, flag_limit
from cellnb.datasets import load_crchisto
from cellnb.train import fit_cell_model, FittedModel
from cellnb.evaluate import evaluate, predictions_frame, metrics_from_preds, paired_compare

RUNS = Path(__file__).resolve().parents[1] / "runs" / "crchisto_cv"

def group_boot_ci(preds, fn, n_boot=500, seed=0):
    "95% CI of fn(true, pred) resampling whole images (groups)."
    rng = np.random.default_rng(seed)
    groups = preds["group"].to_numpy(); ug = np.unique(groups)
    idx_by_g = {g: np.flatnonzero(groups == g) for g in ug}
    t, p = preds["true"].to_numpy(), preds["pred"].to_numpy()
    vals = []
    for _ in range(n_boot):
        idx = np.concatenate([idx_by_g[g] for g in rng.choice(ug, len(ug))])
        vals.append(fn(t[idx], p[idx]))
    return [float(np.percentile(vals, 2.5)), float(np.percentile(vals, 97.5))]

def main():
    ap = argparse.ArgumentParser(); ap.add_argument("--config", default=str(Path(__file__).with_name("crchisto_cv.yaml")))
    ap.add_argument("--only", default=None); ap.add_argument("--resume", action="store_true"); ap.add_argument("--device", default=None)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (run two processes with --only and 1 thread each)")
    ap.add_argument("--rescore", default=None, metavar="KEY[,KEY...]", help="re-score saved fold models (several keys: their mean probability, an ensemble)")
    ap.add_argument("--tta", action="store_true", help="with --rescore: test-time augmentation (8 rotations/flips); with --compare: compare the TTA probabilities")
    ap.add_argument("--fold", type=int, default=None, help="train and save only this fold's model (one process per fold/core); --rescore KEY then pools them")
    ap.add_argument("--compare", default=None, metavar="A,B", help="paired image bootstrap of B - A (weighted-F1, macro-F1, accuracy) on the "
                    "pooled test cells, from two keys' saved fold probabilities (with --tta: their TTA ones); kept under 'comparisons'; "
                    "STEM:KEY reads KEY of the config benchmarks/crchisto_study/STEM.yaml (same folds) from benchmarks/runs/STEM/")
    ap.add_argument("--dry-run", action="store_true", help="check the config and list the entries it would run, then stop")
    a = ap.parse_args()
    if a.threads: torch.set_num_threads(a.threads)
    cfg = check_config(a.config)
    if a.dry_run:
        for m in cfg["models"]:
            print(f"{_key(m):40s} {m['protocol']:12s} epochs {_epochs(m) if m['protocol'] != 'linear_probe' else '-'}  "
                  f"cells/class {m.get('flag_limit') or 'all'}  crop {m.get('crop', cfg['crop'])}")
        print(f"{len(cfg['models'])} entries x {cfg['folds']} folds; config OK"); return
    device = get_device(a.device)
    global RUNS
    RUNS = RUNS.parent / Path(a.config).stem
    out_json = RESULTS / f"{Path(a.config).stem}.json"
    saved = json.loads(out_json.read_text())["models"] if out_json.exists() else {}
    table = saved if a.resume else {}
    only = set(a.only.split(",")) if a.only else None
    t_all = time.perf_counter()
    if a.rescore:
        _rescore(a.rescore.split(","), a.tta, cfg, device, out_json, saved)
        return
    if a.compare:
        _compare(a.compare.split(","), a.tta, cfg, out_json)
        return
    for m in cfg["models"]:
        key = _key(m)
        if (only and m["name"] not in only and key not in only) or key in table: continue
        fold_rows, preds_all, t0 = [], [], time.perf_counter()
        for k, (train_all, test) in enumerate(_folds_at(m.get("crop", cfg["crop"]), cfg)):
            if a.fold is not None and k != a.fold: continue
            train, valid = _train_valid(train_all, cfg["split_seed"])
            if m.get("flag_limit"): train = flag_limit(train, m["flag_limit"], seed=cfg["seed"])
            fitted = fit_cell_model(m["protocol"], m["name"], train, valid, epochs=_epochs(m), seed=m.get("seed", cfg["seed"]),
                                    device=device, bs=cfg["batch_size"], lr=m.get("lr"), progress=False,
                                    label_smoothing=m.get("label_smoothing", 0.0), augment=m.get("augment", True),
                                    **({"model_kwargs": m["model_kwargs"]} if m.get("model_kwargs") else {}))
            fold_dir = RUNS / key.replace("/", "_") / f"fold{k}"
            fitted.save(fold_dir)   # kept (git-ignored) so a fold can be re-scored later
            preds, met = evaluate(fitted, test, n_boot=50, seed=cfg["seed"], **({"tta": True} if m.get("tta") else {}))
            _save_probs(fold_dir, preds[[f"prob_{c}" for c in fitted.classes]].to_numpy(), bool(m.get("tta")), test)   # --rescore reuses them
            preds_all.append(preds.assign(fold=k))
            fold_rows.append(_fold_row(key, k, met, test, [fitted], n_train=len(train)))
        if a.fold is None: table = _record(table, key, m, cfg, fold_rows, preds_all, t0, device, out_json)
    print(f"done in {time.perf_counter() - t_all:.0f} s")

def _epochs(m): return m.get("epochs", 10)

def _key(m):
    "An entry's name in the results: its `key`, else name/protocol[@cells per class]."
    return m.get("key") or (f"{m['name']}/{m['protocol']}" + (f"@{m['flag_limit']}" if m.get("flag_limit") else ""))

_ENTRY_KEYS = {"key", "name", "protocol", "epochs", "flag_limit", "seed", "lr", "crop", "augment", "label_smoothing", "model_kwargs", "tta"}

def check_config(path) -> dict:
    "Read a CV config and check every entry before anything trains: one line saying what is wrong and how to fix it."
    from cellnb.core import CellnbError
    from cellnb.core import check_model
    path = Path(path)
    if not path.exists(): raise SystemExit(f"{path}: no such config; pass --config with a path to a CV yaml")
    cfg = yaml.safe_load(path.read_text()) or {}
    need = ["crop", "folds", "split_seed", "seed", "batch_size", "n_boot", "models"]
    if miss := [k for k in need if k not in cfg]: raise SystemExit(f"{path}: missing {', '.join(miss)}; see benchmarks/crchisto_study/crchisto_cv.yaml")
    seen = set()
    for i, m in enumerate(cfg["models"]):
        where = f"{path}: models[{i}]"
        if not isinstance(m, dict) or "name" not in m or "protocol" not in m: raise SystemExit(f"{where} needs a name and a protocol")
        if extra := sorted(set(m) - _ENTRY_KEYS): raise SystemExit(f"{where} has unknown keys {extra}; allowed: {sorted(_ENTRY_KEYS)}")
        try: check_model(m["protocol"], m["name"])
        except CellnbError as e: raise SystemExit(f"{where}: {e}") from None
        if (k := _key(m)) in seen: raise SystemExit(f"{where}: key {k!r} appears twice; give one of them its own `key`")
        seen.add(k)
    return cfg

def _rescore(keys, tta, cfg, device, out_json, table):
    "Score the saved fold models of `keys` again: with test-time augmentation and/or as an ensemble (mean probability)."
    entries = {e.get("key") or e["name"]: e for e in cfg["models"]}
    key = "+".join(keys) + ("+tta" if tta else "")
    fold_rows, preds_all, t0, first = [], [], time.perf_counter(), None
    for k in range(cfg["folds"]):
        fitted = [FittedModel.load(RUNS / kk.replace("/", "_") / f"fold{k}", device=device) for kk in keys]
        first = first or fitted[0]
        test = _folds_at(fitted[0].src_size, cfg)[k][1]     # the same cells, cut at the crop the model was trained on
        probs = np.mean([_fold_probs(RUNS / kk.replace("/", "_") / f"fold{k}", f, _folds_at(f.src_size, cfg)[k][1], tta)
                         for kk, f in zip(keys, fitted)], axis=0)
        preds = predictions_frame(probs, test, fitted[0].classes)
        met = metrics_from_preds(preds, fitted[0].classes, n_boot=50, seed=cfg["seed"])
        preds_all.append(preds.assign(fold=k))
        fold_rows.append(_fold_row(key, k, met, test, fitted))
    src = entries.get(keys[0]) or table.get(keys[0]) or {}
    m = dict(name="+".join(dict.fromkeys(f.model_name for f in fitted)), protocol=first.protocol, epochs=first.config.get("epochs"),
             flag_limit=src.get("flag_limit"), tta=tta, model_kwargs=first.config.get("model_kwargs", {}),
             **({"augment": first.config["augment"]} if isinstance(first.config.get("augment"), dict) else {}),
             **_crop_field(sorted({f.src_size for f in fitted}), cfg))
    _record(table, key, m, cfg, fold_rows, preds_all, t0, device, out_json)

def _saved_preds(key, k, tta, cfg, runs=None, stem=None):
    """The per-cell predictions of `key`'s fold-k model on its test cells, from the probabilities saved next to it (in
    `runs`, default RUNS); `stem` names the other config the key belongs to (--compare STEM:KEY), for the hints."""
    fold_dir = (runs or RUNS) / key.replace("/", "_") / f"fold{k}"
    f, config = _probs_file(fold_dir, tta), (f" --config benchmarks/crchisto_study/{stem}.yaml" if stem else "")
    rescore = f"--rescore {key}{config}{' --tta' if tta else ''}"
    unpack = f"unpack its GPU run's probabilities (tar xzf {stem}_probs.tgz -C benchmarks/runs) or " if stem else ""
    if not f.exists():
        raise SystemExit(f"{f}: no saved test probabilities of {key!r} fold {k}; {unpack}train it (--only {key} --fold {k}"
                         f"{config}) or re-score it ({rescore}) first")
    if _probs_stale(fold_dir, f):
        raise SystemExit(f"{f} is older than the model beside it; re-score it ({rescore}) first")
    if not (fold_dir / "config.json").exists():
        raise SystemExit(f"{fold_dir}: test probabilities without the config.json saved beside them; copy the whole fold folder")
    conf = json.loads((fold_dir / "config.json").read_text())
    test, probs = _folds_at(conf["src_size"], cfg)[k][1], np.load(f)
    if len(probs) != len(test): raise SystemExit(f"{f} holds {len(probs)} cells, fold {k} tests {len(test)}; re-score {key!r}")
    if (c := fold_dir / "test_cells.npy").exists() and not np.array_equal(np.load(c), np.asarray(test.root_idx)):
        raise SystemExit(f"{c}: {key!r} fold {k} tested other cells than this machine's fold {k} (a different split, e.g. "
                         "another scikit-learn); its probabilities cannot be paired with these")
    return predictions_frame(probs, test, conf["classes"]).assign(fold=k)

_SCORES = dict(weighted_f1=lambda t, p: f1_score(t, p, average="weighted"), macro_f1=lambda t, p: f1_score(t, p, average="macro"),
               accuracy=accuracy_score)   # (true, pred) -> score: the rows' metrics and --compare's

def _compare_source(label, cfg, out_json):
    """Where --compare reads `label`'s fold probabilities and checks its row: this config's runs folder and JSON, or for
    STEM:KEY those of the config benchmarks/crchisto_study/STEM.yaml, which must split the same folds (then its test cells are these)."""
    stem, _, key = label.partition(":")
    if not key: return stem, RUNS, out_json, None
    if not (y := Path(__file__).with_name(f"{stem}.yaml")).exists():
        raise SystemExit(f"--compare {label}: no config {y.name} in benchmarks/crchisto_study/; STEM:KEY names a CV config by its file stem")
    other = check_config(y)
    if (diff := [f for f in ("folds", "split_seed") if other[f] != cfg[f]]):
        raise SystemExit(f"--compare {label}: {stem}.yaml splits other folds ({', '.join(f'{f} {other[f]} here {cfg[f]}' for f in diff)}); "
                         "compare entries of configs with the same folds and split_seed")
    return key, RUNS.parent / stem, out_json.with_name(f"{stem}.json"), stem

def _compare(keys, tta, cfg, out_json, n_boot=2000):
    """Paired image bootstrap of keys[1] - keys[0] on the pooled out-of-fold test cells (both folds), per metric; written to
    the JSON. A key STEM:KEY names an entry of another config with the same folds (see `_compare_source`)."""
    src = [_compare_source(kk, cfg, out_json) for kk in keys] if len(keys) == 2 else []
    if not src or src[0][:2] == src[1][:2]: raise SystemExit(f"--compare {','.join(keys)}: name two different keys, A,B (B - A is reported)")
    for key, _, js, stem in src:
        if key not in (json.loads(js.read_text()) if js.exists() else {"models": {}})["models"]:
            raise SystemExit(f"{js.name} has no row {key!r}; " + (f"copy its run's {js.name} into benchmarks/results/ (a GPU call returns it in $OUT) "
                             f"or run it with --config benchmarks/crchisto_study/{stem}.yaml" if stem else "--rescore it first so the comparison sits beside its row"))
    d = json.loads(out_json.read_text()) if out_json.exists() else {"models": {}}
    A, B = ([_saved_preds(key, k, tta, cfg, runs, stem) for k in range(cfg["folds"])] for key, runs, _, stem in src)
    PA, PB = pd.concat(A, ignore_index=True), pd.concat(B, ignore_index=True)
    name = f"{keys[1]} - {keys[0]}" + (" (tta)" if tta else "")
    row = dict(a=keys[0], b=keys[1], tta=tta, n_cells=len(PA), n_images=int(PA["group"].nunique()), n_boot=n_boot,
               folds=[{m: float(f(b.true, b.pred) - f(a.true, a.pred)) for m, f in _SCORES.items()} for a, b in zip(A, B)])
    for m in _SCORES:
        r = paired_compare(PB, PA, n_boot=n_boot, seed=cfg["seed"], group_bootstrap=True, metric=m)
        row[m] = dict(diff=r["diff"], ci=[r["ci_low"], r["ci_high"]], p=r["p"], a=r[f"{m}_b"], b=r[f"{m}_a"])
        print(f"{name}: {m} {r['diff']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}] (p {r['p']:.3f}; "
              f"per fold {' / '.join(format(f[m], '+.3f') for f in row['folds'])})", flush=True)
    d.pop("machine", None)
    write_result(out_json.stem, {**d, "comparisons": {**d.get("comparisons", {}), name: row}})

def _crop_field(crops, cfg):
    "The row's crop when it is not the config's: one size, or 'A+B' for an ensemble of crops."
    if crops == [cfg["crop"]]: return {}
    return {"crop": crops[0] if len(crops) == 1 else "+".join(map(str, crops))}

def _fold_probs(fold_dir, fitted, test, tta):
    "A saved fold model's test-cell probabilities, kept next to it (reused while newer than its weights: ensembles re-use them)."
    f = _probs_file(fold_dir, tta)
    if f.exists() and not _probs_stale(fold_dir, f):
        probs = np.load(f)
        if len(probs) == len(test): return probs
    return _save_probs(fold_dir, fitted.predict_proba(test, tta=tta), tta, test)

def _probs_stale(fold_dir, f) -> bool:
    "Saved probabilities `f` not newer than the fold model's weights beside them (retrained since)."
    weights = [fold_dir / n for n in ("model.pt", "probe.npz") if (fold_dir / n).exists()]
    return bool(weights) and f.stat().st_mtime <= weights[0].stat().st_mtime

def _probs_file(fold_dir, tta): return fold_dir / ("test_probs_tta.npy" if tta else "test_probs.npy")

def _save_probs(fold_dir, probs, tta, test):
    """Keep a fold model's test probabilities next to it (written whole or not at all), with the test cells' indices
    (test_cells.npy): --compare checks them, so probabilities from another machine's split are never paired by row."""
    for f, a in ((_probs_file(fold_dir, tta), probs), (fold_dir / "test_cells.npy", np.asarray(test.root_idx))):
        tmp = f.with_suffix(".tmp.npy"); np.save(tmp, a); tmp.replace(f)
    return probs

def _fold_row(key, k, met, test, fitted, n_train=None):
    "One fold's row of the table (several fitted models: an ensemble), printed as it is made."
    row = dict(fold=k, accuracy=met["accuracy"], macro_f1=met["macro_f1"], weighted_f1=met["weighted_f1"],
               **({"n_train": n_train} if n_train is not None else {}), n_test=len(test),
               train_seconds=sum(f.train_seconds for f in fitted),
               best_epoch=fitted[0].best_epoch if len(fitted) == 1 else [f.best_epoch for f in fitted])
    print(f"{key:32s} fold {k}: acc {met['accuracy']:.3f}  macro-F1 {met['macro_f1']:.3f}  weighted-F1 {met['weighted_f1']:.3f}"
          + (f"  ({n_train} train cells, {row['train_seconds']:.0f} s)" if n_train is not None else ""), flush=True)
    return row

def _record(table, key, m, cfg, fold_rows, preds_all, t0, device, out_json):
    "Pool the folds' out-of-fold predictions into the model's row, merge with other writers' rows and write the JSON."
    P = pd.concat(preds_all, ignore_index=True)
    acc, mf1, wf1 = _SCORES["accuracy"], _SCORES["macro_f1"], _SCORES["weighted_f1"]
    t_, p_ = P["true"].to_numpy(), P["pred"].to_numpy()
    table[key] = dict(model=m["name"], protocol=m["protocol"], epochs=None if m["protocol"] == "linear_probe" else _epochs(m), flag_limit=m.get("flag_limit"), tta=bool(m.get("tta")),
        model_kwargs=m.get("model_kwargs", {}), **{k: m[k] for k in ("augment", "label_smoothing", "crop") if k in m},
        accuracy=float(acc(t_, p_)), accuracy_ci=group_boot_ci(P, acc, cfg["n_boot"]),
        macro_f1=float(mf1(t_, p_)), macro_f1_ci=group_boot_ci(P, mf1, cfg["n_boot"]),
        weighted_f1=float(wf1(t_, p_)), weighted_f1_ci=group_boot_ci(P, wf1, cfg["n_boot"]),
        weighted_f1_fold_mean=float(np.mean([r["weighted_f1"] for r in fold_rows])), folds=fold_rows,
        wall_seconds=time.perf_counter() - t0)
    r = table[key]
    print(f"{key:32s} pooled: acc {r['accuracy']:.3f} {r['accuracy_ci']}  macro-F1 {r['macro_f1']:.3f}  "
          f"weighted-F1 {r['weighted_f1']:.3f} [{r['weighted_f1_ci'][0]:.3f}, {r['weighted_f1_ci'][1]:.3f}]", flush=True)
    # merge with what other processes (--only on other models) wrote meanwhile; this process's entries win
    prev = json.loads(out_json.read_text()) if out_json.exists() else {}
    table = {**prev.get("models", {}), **table}
    write_result(out_json.stem, dict(
        **best_entries(table), target_weighted_f1=0.80, crop=cfg["crop"], folds=cfg["folds"], device=str(device),
        config=cfg, models=table, **({"comparisons": prev["comparisons"]} if "comparisons" in prev else {})))
    return table

def best_entries(table) -> dict:
    """The JSON's head: the best task-specific (scratch) entry and its weighted-F1, which the 0.80 target names, and the
    best entry of any protocol. With no scratch entry yet (a GPU run of backbone entries only) the first two are None:
    a pretrained backbone is never reported as the task-specific model."""
    scratch = [k for k, v in table.items() if v["protocol"] == "scratch"]
    best_s = max(scratch, key=lambda k: table[k]["weighted_f1"]) if scratch else None
    return dict(best_model=best_s, best_weighted_f1=table[best_s]["weighted_f1"] if best_s else None,
                best_overall=max(table, key=lambda k: table[k]["weighted_f1"]))

_FOLDS = {}
def _folds_at(crop, cfg):
    "The CV folds with cells cut at `crop` px: the same images and cells at every crop (checked), so rows compare."
    if crop not in _FOLDS:
        cells = load_crchisto(crchisto_path(required=True), crop=int(crop))
        _FOLDS[crop] = group_folds(cells, k=cfg["folds"], seed=cfg["split_seed"])
        if crop != cfg["crop"]:
            ref = _folds_at(cfg["crop"], cfg)
            assert all(np.array_equal(a[1].root_idx, b[1].root_idx) for a, b in zip(_FOLDS[crop], ref)), "folds differ between crops"
    return _FOLDS[crop]

def _train_valid(train_all, seed):
    "Hold out a tenth of the training images (grouped, stratified) for model selection; the rest trains."
    _, valid, _ = group_split(train_all, valid=0.1, test=0.1, seed=seed)
    keep = np.setdiff1d(np.arange(len(train_all)), _positions(train_all, valid))
    return train_all[keep], valid

def _positions(parent, sub):
    "Positions in `parent` of the cells of `sub` (both share a root)."
    pos = {int(r): i for i, r in enumerate(parent.root_idx)}
    return np.array([pos[int(r)] for r in sub.root_idx], dtype=np.int64)

if __name__ == "__main__": main()
