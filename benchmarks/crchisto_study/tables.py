"""Each CRCHisto results JSON as markdown tables, to read one experiment in full (per-seed rows, every finding it computed).
The report and its figures come from the tidy tables instead (benchmarks/results_tables.py, nbs/20_crchisto_study.ipynb).

Usage: python benchmarks/crchisto_study/tables.py [cv|cv_gpu|flaglimit|findings|classmix|shared40|classmix_shared40|ft1024|ft2048|fullft_grid|ftall|fullft512|fullft1024|fullft2048|fullftall|fullft512long|ftlast512long|fullft256long]...   (default: the first four)
"""
import json, sys
import sys as _sys, pathlib as _pl; _sys.path[:0] = [str(_pl.Path(__file__).resolve().parents[1]), str(_pl.Path(__file__).resolve().parents[1] / "crchisto_study")]   # _common, the study scripts
from _common import RESULTS


def _load(name: str) -> dict:
    "benchmarks/results/<name>.json, parsed."
    return json.loads((RESULTS / f"{name}.json").read_text())

def _lab(f): return "all" if int(f) >= 100000 else str(f)   # FlagLimit 100000: every cell

def _ci(v, ci): return f"{v:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci and ci[0] is not None else f"{v:.3f}"

def cv_table(name: str = "crchisto_cv") -> str:
    d = _load(name)
    rows = ["| entry | protocol | crop px | cells/class (train) | epochs (best per fold, counted from 0) | TTA | accuracy [95% CI] | macro-F1 [95% CI] | weighted-F1 [95% CI] | weighted-F1 per fold | train s (both folds) |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    ep = lambda b: "-" if b is None else "+".join(map(str, b)) if isinstance(b, list) else str(b)
    for k, r in sorted(d["models"].items(), key=lambda kv: -kv[1]["weighted_f1"]):
        folds = r["folds"]
        best = "/".join(ep(f.get("best_epoch")) for f in folds)
        rows.append(f"| {k} | {r['protocol']} | {r.get('crop', d['crop'])} | {r['flag_limit'] or 'all'} | {r['epochs'] or '-'} ({best}) | {'yes' if r.get('tta') else 'no'} | "
                    f"{_ci(r['accuracy'], r['accuracy_ci'])} | {_ci(r['macro_f1'], r['macro_f1_ci'])} | "
                    f"{_ci(r['weighted_f1'], r['weighted_f1_ci'])} | {' / '.join(format(f['weighted_f1'], '.3f') for f in folds)} | "
                    f"{sum(f['train_seconds'] for f in folds):.0f} |")
    head = (f"best task-specific model: **{d['best_model']}**, pooled out-of-fold weighted-F1 **{d['best_weighted_f1']:.3f}** "
            f"(target 0.80); best overall: {d['best_overall']}" if d["best_model"] else
            f"no task-specific (scratch) entry in {name}.json yet; best overall: {d['best_overall']}")
    return head + "\n\n" + "\n".join(rows) + _cv_comparisons(d.get("comparisons", {}))

def _cv_comparisons(comps) -> str:
    "crchisto_cv.py --compare rows: B - A on the same pooled out-of-fold test cells, image bootstrap."
    if not comps: return ""
    d = lambda g: f"{g['diff']:+.3f} [{g['ci'][0]:+.3f}, {g['ci'][1]:+.3f}]"
    rows = ["| B - A (same test cells) | TTA | weighted-F1 [95% CI] | macro-F1 [95% CI] | accuracy [95% CI] | weighted-F1 per fold | images / cells |",
            "|---|---|---|---|---|---|---|"]
    for c in comps.values():
        rows.append(f"| {c['b']} - {c['a']} | {'yes' if c['tta'] else 'no'} | {d(c['weighted_f1'])} | {d(c['macro_f1'])} | {d(c['accuracy'])} | "
                    f"{' / '.join(format(f['weighted_f1'], '+.3f') for f in c['folds'])} | {c['n_images']} / {c['n_cells']} |")
    return ("\n\npaired comparisons (`crchisto_cv.py --compare A,B`): paired image bootstrap "
            f"({next(iter(comps.values()))['n_boot']} resamples) of B - A\n\n" + "\n".join(rows))

def flaglimit_table() -> str:
    d = _load("crchisto_flaglimit")
    t = d["table"]
    fls = sorted({int(f) for e in t.values() for f in e})
    rows = ["| model | " + " | ".join(_lab(f) for f in fls) + " |", "|---|" + "---|" * len(fls)]
    for e, per in sorted(t.items()):
        cells = []
        for f in fls:
            r = per.get(str(f))
            cells.append("" if r is None else f"{r['macro_f1']:.3f} [{r['boot_ci'][0]:.2f}, {r['boot_ci'][1]:.2f}] n={r['n_seeds']}")
        rows.append(f"| {e} | " + " | ".join(cells) + " |")
    return (f"{d['runs_ok']} of {d['runs']} runs ok; training time {d['train_seconds_total'] / 60:.0f} min in all\n\n"
            "macro-F1 on the clean test set, mean over the n seeds run [mean of the per-run image-bootstrap 95% CIs]\n\n" + "\n".join(rows))

def _diff(g) -> str:
    "A gain dict as mean [95% CI], signed, without the seed count (table cells that name the method beside it); one seed has no CI."
    if g["ci"][0] is None: return f"{g['mean']:+.3f} [no CI: n={g['n']}]"
    return f"{g['mean']:+.3f} [{g['ci'][0]:+.3f}, {g['ci'][1]:+.3f}]"

def _g(g, nd=3):
    "A gain dict of crchisto_flaglimit.findings: mean [t-based CI] (n seeds)."
    if not g or g.get("mean") is None: return ""
    ci = f" [{g['ci'][0]:+.{nd}f}, {g['ci'][1]:+.{nd}f}]" if g["ci"][0] is not None else ""
    return f"{g['mean']:+.{nd}f}{ci} (n={g['n']})"

def findings_table() -> str:
    "Findings (a)-(d) per model, from the FlagLimit JSON."
    d = _load("crchisto_flaglimit")
    a, b, c, bl = d["a_scratch_keeps_rising"], d["b_saturation"], d["c_vit_vs_cnns"], d["d_blur_slopes"]
    rows = ["| model | (a) gain over the span with every seed | (a) last step | (b) best macro-F1, 95% of it at | (d) blur slope pre (40-px patch) | (d) blur slope source (crop before resize) | (c) custom_vit minus this model |",
            "|---|---|---|---|---|---|---|"]
    for e in sorted(d["table"]):
        ae, be, de = a.get(e, {}), b.get(e, {}), bl.get(e, {})
        span = f"{_lab(ae['all_seeds_span'][0])} -> {_lab(ae['all_seeds_span'][1])}: {_g(ae['gain_all_seeds_span'])}" if ae else ""
        last = f"{_lab(ae['last_step'][0])} -> {_lab(ae['last_step'][1])}: {_g(ae['gain_last_step'])}" if ae else ""
        sat = f"{be['best']:.3f}, {_lab(be['flag_limit_95pct'])}" if be else ""
        sl = lambda pl: (f"{de[pl]['slope']:+.3f}" + (f" [{de[pl]['seed_ci'][0]:+.3f}, {de[pl]['seed_ci'][1]:+.3f}]" if de[pl]['seed_ci'][0] is not None else "")
                         + f" at {_lab(de[pl]['flag_limit'])} (n={de[pl]['n_runs']})") if pl in de else ""
        vit = "; ".join(f"at {_lab(f)}: {_g(v['vit_minus_model'])}" + "".join(
                  f", seed {r['seed']} {r['diff']:+.3f} [{r['image_boot_ci'][0]:+.3f}, {r['image_boot_ci'][1]:+.3f}]" for r in (v["per_seed"] or []) if v['vit_minus_model']['n'] == 1)
              for f, v in sorted(c.get(e, {}).items(), key=lambda kv: int(kv[0])))
        rows.append(f"| {e} | {span} | {last} | {sat} | {sl('pre')} | {sl('source')} | {vit} |")
    sa = d.get("d_slope_vs_accuracy")
    corr = ("" if not sa else f"\n\n(d) blur slope ({sa['placement']}) against clean macro-F1 across the {sa['n_models']} models at "
            f"{_lab(sa['flag_limit'])} (means over seeds): Pearson r = {sa['r']:+.2f} [{sa['ci'][0]:+.2f}, {sa['ci'][1]:+.2f}], p = {sa['p']:.3f}")
    return ("macro-F1 differences on the clean test set; [..] are t-based 95% CIs over seeds (paired by seed), and for a single "
            "seed the paired image-bootstrap 95% CI\n\n" + "\n".join(rows) + corr)

def classmix_table(name: str = "crchisto_flaglimit") -> str:
    "Finding (e) of results/<name>.json: the all-cells runs with a balanced loss or a balanced prior against the plain ones, per seed."
    d = _load(name).get("e_class_mix") or {}
    rows = ["| model | seed | plain all | plain 2048 | balanced loss, all | minus plain all | minus plain 2048 | prior-corrected all | minus plain all | minus plain 2048 | 'others' recall: 2048 / all / balanced / prior-corrected |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    dd = lambda x: f"{x['diff']:+.3f} [{x['image_boot_ci'][0]:+.3f}, {x['image_boot_ci'][1]:+.3f}]" if x else ""
    for e, v in sorted(d.items()):
        for r in v["per_seed"]:
            rm, p2 = r["recall_minority"], r.get("plain_2048")
            rows.append(f"| {e} | {r['seed']} | {r['plain']:.3f} | {'' if p2 is None else format(p2, '.3f')} | {r['balanced']:.3f} | "
                        f"{dd(r['balanced_minus_plain'])} | {dd(r.get('balanced_minus_plain_2048'))} | {r['prior_corrected']:.3f} | "
                        f"{dd(r['prior_corrected_minus_plain'])} | {dd(r.get('prior_corrected_minus_plain_2048'))} | "
                        f"{'' if p2 is None else format(r['recall_minority_2048'], '.2f')} / {rm['plain']:.2f} / {rm['balanced']:.2f} / {rm['prior_corrected']:.2f} |")
        if v["balanced_minus_plain"]["n"] > 1:
            rows.append(f"| {e} | mean | | | | {_g(v['balanced_minus_plain'])} | | | {_g(v['prior_corrected_minus_plain'])} | | |")
    return ("macro-F1 on the clean test set at all cells; differences are paired image-bootstrap 95% CIs on the same cells, "
            "and over seeds t-based\n\n" + "\n".join(rows))

def _welch(new, old):
    "Difference of two seed means (new - old) with a Welch t 95% CI, from each row's mean, seed SD and seed count."
    from crchisto_flaglimit import _welch as welch
    if any(r["n_seeds"] < 2 or r["seed_sd"] is None for r in (new, old)): return f"{new['macro_f1'] - old['macro_f1']:+.3f}"
    w = welch(new["macro_f1"], new["seed_sd"], new["n_seeds"], old["macro_f1"], old["seed_sd"], old["n_seeds"])
    return f"{w['mean']:+.3f} [{w['ci'][0]:+.3f}, {w['ci'][1]:+.3f}]"

def _r_with(old, new):
    """Finding (d)'s slope-vs-accuracy correlation (crchisto_flaglimit._slope_vs_accuracy) over the old study's models,
    with each model that the re-run measured again at its new point; and which models those are."""
    from crchisto_flaglimit import _slope_vs_accuracy
    sa = old.get("d_slope_vs_accuracy")
    if not sa: return None, []
    rep = [e for e in new["table"] if e in sa["points"] and str(sa["flag_limit"]) in new["table"][e]]
    return _slope_vs_accuracy({**old["table"], **new["table"]}, {**old["d_blur_slopes"], **new["d_blur_slopes"]}), rep

def _slopes(sl) -> str:
    "Finding (d): each entry's blur slopes, source and pre, mean over seeds [t 95% CI] at the FlagLimit they were read at."
    return "; ".join(f"{e} {pl} {_g(dict(mean=v['slope'], ci=v['seed_ci'], n=v['n_runs']))} at {_lab(v['flag_limit'])}"
                     for e, pls in sorted(sl.items()) if isinstance(pls, dict) for pl, v in sorted(pls.items()))

def _protocol_rows(d) -> list:
    "Finding (f): a backbone's protocols against each other, one markdown row per comparison and FlagLimit."
    rows = ["| comparison | FlagLimit | mean over seeds [t 95% CI] | per seed [paired image-bootstrap 95% CI] |", "|---|---|---|---|"]
    for k, per in sorted(d.get("f_protocol_gains", {}).items()):
        for f, v in sorted(per.items(), key=lambda kv: int(kv[0])):
            seeds = "; ".join(f"seed {r['seed']} {r['diff']:+.3f} [{r['image_boot_ci'][0]:+.3f}, {r['image_boot_ci'][1]:+.3f}]" for r in v["per_seed"] or [])
            rows.append(f"| {k} | {_lab(f)} | {_g(v['gain'])} | {seeds} |")
    return rows

def extension_table(name: str = "crchisto_flaglimit_shared40_ft1024") -> str:
    """A curve extended in its own folder (results/<name>.json, run with --prior): each entry's macro-F1 per seed here,
    finding (g) against the earlier JSON, (f) the protocols against each other and (d) the blur slopes."""
    if not (RESULTS / f"{name}.json").exists():
        sys.exit(f"tables.py: no results/{name}.json yet; run its config with benchmarks/crchisto_study/crchisto_flaglimit.py (command in its header)")
    d = _load(name)
    rows = ["| entry | FlagLimit | macro-F1, mean (n seeds) | per seed | weighted-F1 | train s per run |", "|---|---|---|---|---|---|"]
    for e, per in sorted(d["table"].items()):
        for f, r in sorted(per.items(), key=lambda kv: int(kv[0])):
            seeds = ", ".join(f"{k}: {v:.3f}" for k, v in sorted(r.get("seed_macro_f1", {}).items()))
            rows.append(f"| {e} | {_lab(f)} | {r['macro_f1']:.3f} (n={r['n_seeds']}) | {seeds} | {r['weighted_f1']:.3f} | {r['train_seconds']:.0f} |")
    g = ["| entry | step | here | prior | gain [95% CI] | how | prior JSON |", "|---|---|---|---|---|---|---|"]
    for e, per in sorted(d.get("g_against_prior", {}).items()):
        for step, v in per.items():
            lo, hi = step.split("->")
            g.append(f"| {e} | {_lab(lo)} -> {_lab(hi)} | {v['here']:.3f} | {v['prior']:.3f} | "
                     f"{_diff(v['gain'])} | {v['gain']['method']} | {v['prior_json']} |")
    steps = "; ".join(f"{e}: {_lab(v['last_step'][0])} -> {_lab(v['last_step'][1])} {_g(v['gain_last_step'])}"
                      for e, v in sorted(d.get("a_scratch_keeps_rising", {}).items()))
    within = f"\n\n(a) the last step within this folder, paired by seed [t 95% CI]: {steps}" if steps else ""
    fx = ["| comparison | FlagLimit | here | prior | difference [95% CI] | how | prior JSON |", "|---|---|---|---|---|---|---|"]
    for k, per in sorted(d.get("f_against_prior", {}).items()):
        for f, v in sorted(per.items(), key=lambda kv: int(kv[0])):
            fx.append(f"| {k} | {_lab(f)} | {v['here'].split(' · ')[-1]} {v['here_macro_f1']:.3f} | {v['prior'].split(' · ')[-1]} "
                      f"{v['prior_macro_f1']:.3f} | {_diff(v['gain'])} | {v['gain']['method']} | {v['prior_json']} |")
    within_f = "\n".join(prot) if len(prot := _protocol_rows(d)) > 2 else "none: this folder ran one protocol (see across folders below)"
    across = ("\n\n(f) across folders: a protocol here against the backbone's other protocols at the same FlagLimit in the "
              "earlier JSON (the costlier minus the cheaper)\n\n" + "\n".join(fx)) if len(fx) > 2 else ""
    return (f"{d['runs_ok']} of {d['runs']} runs ok; training time {d['train_seconds_total'] / 60:.0f} min in all\n\n"
            "clean macro-F1, mean over seeds and per seed\n\n" + "\n".join(rows) + within +
            "\n\n(g) against the earlier curve (a step to the same FlagLimit checks that a re-run reproduces it)\n\n" + "\n".join(g) +
            "\n\n(f) protocols against each other, macro-F1 differences on the clean test set\n\n" + within_f + across +
            _against_scratch(d) +
            f"\n\n(d) blur slopes, per unit log2(1+sigma), mean over seeds [t 95% CI]: {_slopes(d['d_blur_slopes'])}")

def _against_scratch(d) -> str:
    """Each entry of an extension folder against the study's scratch references (REFERENCE_SCRATCH in
    crchisto_flaglimit.json) at the same FlagLimit: same split and test cells, other runs, so Welch over seed means."""
    ref = _load("crchisto_flaglimit")["table"]
    rows = ["| entry | FlagLimit | here | scratch reference | difference [Welch t 95% CI] |", "|---|---|---|---|---|"]
    for e, per in sorted(d["table"].items()):
        for f, r in sorted(per.items(), key=lambda kv: int(kv[0])):
            rows += [f"| {e} | {_lab(f)} | {r['macro_f1']:.3f} | {s} {ref[s][f]['macro_f1']:.3f} | {_welch(r, ref[s][f])} |"
                     for s in REFERENCE_SCRATCH if f in ref.get(s, {})]
    return ("\n\nagainst the scratch models at the same FlagLimit (crchisto_flaglimit.json: same split and test cells, "
            "other runs)\n\n" + "\n".join(rows)) if len(rows) > 2 else ""

def shared40_table() -> str:
    """The backbone's FlagLimit runs on the shared 40-px patch (crchisto_flaglimit_shared40.json) against the same rows on
    the old patch (crchisto_flaglimit.json), and finding (f): the backbone's protocols against each other."""
    new = _load("crchisto_flaglimit_shared40")
    old = _load("crchisto_flaglimit")
    fls = sorted({int(f) for e in new["table"].values() for f in e})
    rows = ["| entry | " + " | ".join(_lab(f) for f in fls) + " |", "|---|" + "---|" * len(fls)]
    for e, per in sorted(new["table"].items()):
        cells = []
        for f in fls:
            r, o = per.get(str(f)), old["table"].get(e, {}).get(str(f))
            cells.append("" if r is None else f"{r['macro_f1']:.3f} (n={r['n_seeds']})" +
                         ("" if o is None else f"; old {o['macro_f1']:.3f} (n={o['n_seeds']}), {_welch(r, o)}"))
        rows.append(f"| {e} | " + " | ".join(cells) + " |")
    a = new["a_scratch_keeps_rising"]
    rising = "; ".join(f"{e}: {_lab(v['all_seeds_span'][0])} -> {_lab(v['all_seeds_span'][1])} {_g(v['gain_all_seeds_span'])}, "
                      f"last step {_lab(v['last_step'][0])} -> {_lab(v['last_step'][1])} {_g(v['gain_last_step'])}" for e, v in sorted(a.items()))
    b, bo = new["b_saturation"], old["b_saturation"]
    sat = "; ".join(f"{e}: best {v['best']:.3f}, 95% of it at {_lab(v['flag_limit_95pct'])}" +
                    (f" (old patch: {bo[e]['best']:.3f}, at {_lab(bo[e]['flag_limit_95pct'])})" if e in bo else "") for e, v in sorted(b.items()))
    slopes = _slopes(new["d_blur_slopes"])
    r, rep = _r_with(old, new)
    if r and rep: slopes += (f"\n\n(d) blur slope ({r['placement']}) against clean macro-F1 across the {r['n_models']} models at {_lab(r['flag_limit'])}, "
                     f"with {', '.join(rep)} on the shared patch: Pearson r = {r['r']:+.2f} [{r['ci'][0]:+.2f}, "
                     f"{r['ci'][1]:+.2f}], p = {r['p']:.4f} (old patch: {old['d_slope_vs_accuracy']['r']:+.2f})")
    gains = _protocol_rows(new)
    return (f"{new['runs_ok']} of {new['runs']} runs ok; training time {new['train_seconds_total'] / 60:.0f} min in all\n\n"
            "clean macro-F1 on the shared 40-px patch, mean over n seeds; old: the same row on the old patch, and the "
            "difference new - old with a Welch t 95% CI over seeds\n\n" + "\n".join(rows) +
            f"\n\n(a) gains with data, paired by seed [t 95% CI]: {rising}\n\n(b) {sat}\n\n(d) blur slopes, per unit log2(1+sigma), mean over seeds [t 95% CI]: {slopes}\n\n"
            "(f) protocols against each other, macro-F1 differences on the clean test set\n\n" + "\n".join(gains))

EXTENSIONS = ("ft1024", "ft2048", "fullft_grid", "ftall", "fullft512", "fullft1024", "fullft2048", "fullftall")   # curves extended in their own folders, oldest first
# A FlagLimit re-run with a longer schedule, in its own folder: not a point of the curves (its schedule differs), but the
# control that splits a curve's step into a steps part and a cells part. Folder -> (entry, the results JSON with the same
# cells on the shorter schedule, the results JSON with more cells on this schedule's step count).
SCHEDULE_CONTROLS = {
    "fullft512long": ("effnet_lite0_in1k · full_ft", "crchisto_flaglimit_shared40_fullft512", "crchisto_flaglimit_shared40_fullft1024"),
    "ftlast512long": ("effnet_lite0_in1k · ft_last", "crchisto_flaglimit_shared40", "crchisto_flaglimit_shared40_ft1024"),
    "fullft256long": ("effnet_lite0_in1k · full_ft", "crchisto_flaglimit_shared40_fullft_grid", "crchisto_flaglimit_shared40_fullft512")}
REFERENCE_SCRATCH = ("cnn", "custom_vit")   # from crchisto_flaglimit.json: the best scratch CNN and the study's small-patch ViT

def _steps(d: dict, protocol: str, fl) -> int:
    """Optimizer steps of one `protocol` run at FlagLimit `fl` under the results JSON config that ran it, by the runs' own
    policy (`cellnb.train.train_schedule`); CRCHisto's 4 classes each have at least `fl` cells up to 1024."""
    import yaml
    from cellnb.train import train_schedule
    cs = [c for c in map(yaml.safe_load, d["configs"]) if protocol in c["protocols"] and int(fl) in c["flag_limits"]]
    if len(cs) != 1: sys.exit(f"tables.py: {len(cs)} configs ran {protocol} at FlagLimit {fl}; a schedule control needs exactly one")
    c = cs[0]
    if not isinstance(c.get("epochs"), int): sys.exit("tables.py: a schedule control needs one epochs number in each config")
    epochs, steps_per_epoch = train_schedule(4 * int(fl), c["batch_size"], c["epochs"], c.get("min_steps") or 0)
    return epochs * steps_per_epoch

def schedule_table(x: str = "fullft512long") -> str:
    """A schedule control (SCHEDULE_CONTROLS): its folder's tables, then the step of the curve it sits on split in two,
    more steps on the same cells, then more cells on the same steps: each part paired by seed (t 95% CI) where both
    sides keep per-seed rows, else Welch over the seed means."""
    from crchisto_flaglimit import _seed_gain
    entry, short_name, more_name = SCHEDULE_CONTROLS[x]
    names = dict(long=f"crchisto_flaglimit_shared40_{x}", short=short_name, more=more_name)
    if missing := [n for n in names.values() if not (RESULTS / f"{n}.json").exists()]:
        sys.exit(f"tables.py: no results/{missing[0]}.json yet; run its config with benchmarks/crchisto_study/crchisto_flaglimit.py (command in its header)")
    d = {k: _load(n) for k, n in names.items()}
    (fl_long, _), = d["long"]["table"][entry].items()   # the control runs one FlagLimit
    (fl_more, _), = d["more"]["table"][entry].items()
    row = {k: (int(fl), _steps(d[k], entry.rsplit(" · ", 1)[-1], fl), d[k]["table"][entry][fl])
           for k, fl in dict(short=fl_long, long=fl_long, more=fl_more).items()}
    lab = lambda k: f"{row[k][0]} cells, {row[k][1]} steps: {row[k][2]['macro_f1']:.3f}"
    parts = [("more steps, same cells", "short", "long"), ("more cells, same steps", "long", "more"), ("both (the curve's step)", "short", "more")]
    rows = ["| part | from | to | difference [95% CI] | how | seeds |", "|---|---|---|---|---|---|"]
    for what, a, b in parts:
        g = _seed_gain(row[b][2], row[a][2])
        rows.append(f"| {what} | {lab(a)} | {lab(b)} | {_diff(g)} | {g['method']} | {', '.join(map(str, g.get('seeds', [])))} |")
    sl = lambda k: " ".join(f"{pl} {v['slope']:+.3f} [{v['seed_ci'][0]:+.3f}, {v['seed_ci'][1]:+.3f}]"
                            + ("" if int(v.get("flag_limit", row[k][0])) == row[k][0] else f" (at {v['flag_limit']} cells)")
                            for pl, v in sorted(d[k]["d_blur_slopes"].get(entry, {}).items()))
    same = "" if row["long"][1] == row["more"][1] else f" (WARNING: {row['long'][1]} against {row['more'][1]} steps: the cells part is not at equal steps)"
    return (extension_table(names["long"]) + f"\n\n{entry}: the {row['short'][0]} -> {row['more'][0]} step split by this folder"
            f" ({names['short']}.json, {names['long']}.json, {names['more']}.json){same}\n\n" + "\n".join(rows) +
            "\n\n(d) blur slopes, per unit log2(1+sigma), mean over seeds [t 95% CI]: " +
            "; ".join(f"{lab(k).rsplit(':', 1)[0]}: {sl(k)}" for k in ("short", "long", "more")))

TABLES = {"cv": cv_table, "cv_gpu": lambda: cv_table("crchisto_cv_gpu"), "flaglimit": flaglimit_table, "findings": findings_table, "classmix": classmix_table,
          "shared40": shared40_table, "classmix_shared40": lambda: classmix_table("crchisto_flaglimit_shared40"),
          **{x: (lambda name=f"crchisto_flaglimit_shared40_{x}": extension_table(name)) for x in EXTENSIONS},
          **{x: (lambda x=x: schedule_table(x)) for x in SCHEDULE_CONTROLS}}

if __name__ == "__main__":
    for w in (sys.argv[1:] or ["cv", "flaglimit", "findings", "classmix"]):
        if w not in TABLES: sys.exit(f"tables.py: no table {w!r}; choose from {', '.join(TABLES)}")
        print(TABLES[w](), end="\n\n")
