"""The measurement behind cellnb's default training policy (`cellnb.train.TRAIN_POLICY`): how many optimizer steps a
model trained from scratch needs at a small FlagLimit on real cells.

CRCHisto, the FlagLimit study's split (image-grouped, split_seed 0: 15,694 training cells, 2,235 validation, 4,515 test
in 19 images) and its nested FlagLimit subsets (`flag_limit(train, n, seed)`), 48-px crops brought to 40 px. Each run
trains with `fit_cell_model` and a *step floor* candidate, everything else at the package's defaults, and is scored on
the clean test cells (macro-F1 with an image-bootstrap CI, `evaluate`), the same way the study scores a run:
  default   fit_cell_model(...) with nothing given: TRAIN_POLICY (at 64 cells per class: 10 epochs of 52 steps)
  floorN    min_steps=N, epochs left to the policy (N // 50 epochs, at most 30)
One JSON per run under benchmarks/results/training_policy/ (resumable: a run whose file exists is skipped);
--summarise writes benchmarks/results/training_policy.csv (one row per run) and prints the table with the best earlier
hand-tuned rows of the FlagLimit study for comparison.
Usage: python benchmarks/ablations/training_policy.py --models cnn custom_vit --candidates default floor250 --seeds 0 1 2
       python benchmarks/ablations/training_policy.py --summarise
Run time on one core of the 2-core development CPU, per run at FlagLimit 64: CNN about 9 min at 500 steps, custom_vit
about 15 min (training at 1.5 s a step of 64 cells, and 10 validations of 2,235 cells).
"""
import argparse, json, time, sys
from pathlib import Path
import numpy as np, pandas as pd, torch

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / 'benchmarks' / 'results' / 'training_policy'
# the best hand-tuned FlagLimit-study rows at 64 cells per class (4 epochs, min_steps 60 raising the epochs, batch 64):
# benchmarks/results/crchisto_flaglimit.json, table[model]['64'], mean of 3 seeds
HAND_TUNED = ROOT / 'benchmarks' / 'results' / 'crchisto_flaglimit.json'

def _candidate(name):
    if name == 'default': return {}
    if name.startswith('floor') and name[5:].isdigit(): return dict(min_steps=int(name[5:]))
    sys.exit(f"training_policy.py: unknown candidate {name!r}; use default or floorN (e.g. floor250)")

def run(models, candidates, seeds, flag_limit):
    from cellnb.datasets import load_dataset
    from cellnb.data import group_split, flag_limit as take_flag_limit
    from cellnb.train import fit_cell_model, learning_warning
    from cellnb.evaluate import evaluate
    cs = load_dataset('crchisto', crop=48)
    train_all, valid, test = group_split(cs, seed=0)
    OUT.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        train = take_flag_limit(train_all, flag_limit, seed=seed)
        for model in models:
            for cand in candidates:
                f = OUT / f"{model}_fl{flag_limit}_{cand}_s{seed}.json"
                if f.exists(): continue
                t0 = time.perf_counter()
                fm = fit_cell_model('scratch', model, train, valid, seed=seed, device='cpu', progress=False, **_candidate(cand))
                preds, met = evaluate(fm, test, n_boot=300, seed=seed)
                row = dict(model=model, flag_limit=flag_limit, candidate=cand, seed=seed, epochs=fm.config['epochs'],
                           steps=fm.config['steps'], min_steps=fm.config['min_steps'], bs=fm.config['bs'],
                           best_epoch=fm.best_epoch, best_valid_macro_f1=float(fm.history['macro_f1'].max()),
                           macro_f1=met['macro_f1'], macro_f1_ci_low=met['macro_f1_ci_low'], macro_f1_ci_high=met['macro_f1_ci_high'],
                           weighted_f1=met['weighted_f1'], accuracy=met['accuracy'], classes_predicted=int(preds['pred'].nunique()),
                           warning=learning_warning(fm, valid, preds['pred']), train_seconds=fm.train_seconds,
                           wall_seconds=time.perf_counter() - t0, threads=torch.get_num_threads())
                f.write_text(json.dumps(row, indent=1))
                print(json.dumps(row), flush=True)

def summarise():
    rows = pd.DataFrame([json.loads(f.read_text()) for f in sorted(OUT.glob('*.json'))])
    rows.to_csv(OUT.parent / 'training_policy.csv', index=False)
    ht = json.loads(HAND_TUNED.read_text())['table']
    t = rows.groupby(['model', 'flag_limit', 'candidate']).agg(steps=('steps', 'first'), epochs=('epochs', 'first'), n_seeds=('seed', 'size'),
        macro_f1=('macro_f1', 'mean'), seed_sd=('macro_f1', 'std'), min_classes=('classes_predicted', 'min'),
        train_min=('train_seconds', lambda s: s.mean() / 60)).reset_index()
    t['hand_tuned'] = [ht[m][str(fl)]['macro_f1'] if m in ht and str(fl) in ht[m] else np.nan for m, fl in zip(t.model, t.flag_limit)]
    t['minus_hand_tuned'] = t.macro_f1 - t.hand_tuned
    print(t.round(3).to_string(index=False))
    return t

if __name__ == '__main__':
    ap = argparse.ArgumentParser()
    ap.add_argument('--models', nargs='+', default=['cnn', 'custom_vit'])
    ap.add_argument('--candidates', nargs='+', default=['default'])
    ap.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
    ap.add_argument('--flag-limit', type=int, default=64)
    ap.add_argument('--summarise', action='store_true')
    a = ap.parse_args()
    if a.summarise: summarise()
    else:
        for c in a.candidates: _candidate(c)
        run(a.models, a.candidates, a.seeds, a.flag_limit)
