"""Markdown tables for BENCHMARKS.md from the CRCHisto result JSONs (so the text quotes exactly what the runs wrote).

Usage: python benchmarks/tables.py [cv|flaglimit]...   (default: both)
"""
import json, sys
from _common import RESULTS

def _ci(v, ci): return f"{v:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci and ci[0] is not None else f"{v:.3f}"

def cv_table() -> str:
    d = json.loads((RESULTS / "crchisto_cv.json").read_text())
    rows = ["| entry | protocol | crop px | cells/class (train) | epochs (best) | TTA | accuracy [95% CI] | macro-F1 [95% CI] | weighted-F1 [95% CI] | weighted-F1 per fold | train s (both folds) |",
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
            f"(target 0.80); best overall: {d['best_overall']}")
    return head + "\n\n" + "\n".join(rows)

def flaglimit_table() -> str:
    d = json.loads((RESULTS / "crchisto_flaglimit.json").read_text())
    t = d["table"]
    fls = sorted({int(f) for e in t.values() for f in e})
    lab = lambda f: "all" if f >= 100000 else str(f)
    rows = ["| model | " + " | ".join(lab(f) for f in fls) + " |", "|---|" + "---|" * len(fls)]
    for e, per in sorted(t.items()):
        cells = []
        for f in fls:
            r = per.get(str(f))
            cells.append("" if r is None else f"{r['macro_f1']:.3f} [{r['boot_ci'][0]:.2f}, {r['boot_ci'][1]:.2f}] n={r['n_seeds']}")
        rows.append(f"| {e} | " + " | ".join(cells) + " |")
    return (f"{d['runs_ok']} of {d['runs']} runs ok; training time {d['train_seconds_total'] / 60:.0f} min in all\n\n"
            "macro-F1 on the clean test set, mean over the n seeds run [mean of the per-run image-bootstrap 95% CIs]\n\n" + "\n".join(rows))

if __name__ == "__main__":
    for w in (sys.argv[1:] or ["cv", "flaglimit"]):
        print(cv_table() if w == "cv" else flaglimit_table(), end="\n\n")
