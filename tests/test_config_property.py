"""Issue 50, class 1: one validation pass decides everything a run needs. For any study config (hypothesis draws every
field from valid and invalid values: negative or huge seeds, NaN and infinite numbers, one-class data, typo'd policy
keys, crops under 40 px, ...), either `run_study` refuses it with a `CellnbError` before the output folder changes
(a finished study there stays byte-identical), or the study's first run starts and gets through training: its code
(the experiment notebook's cells, run in this process with the run's parameters) raises nothing."""
import json, math, shutil, hashlib
from pathlib import Path
import numpy as np, pandas as pd, pytest
from PIL import Image
from hypothesis import given, settings, HealthCheck, Phase, strategies as st
from cellnb.core import CellnbError
from cellnb.sweep import StudyConfig, run_study, expand, experiment_notebook
from test_sweep import toy_notebook

def tree_hashes(d:Path) -> dict:
    "sha256 of every file under `d` (and the folder list): equal hashes mean a byte-identical folder."
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else 'dir' for p in sorted(d.rglob('*'))}

@pytest.fixture(scope='module')
def place(tmp_path_factory):
    "A finished (toy) study to refuse configs into, a two-class folder with 12 tiles, and a CSV whose cells are all one class."
    d = tmp_path_factory.mktemp('prop')
    run_study(StudyConfig.tiny(), d/'finished', notebook=toy_notebook(d/'toy.ipynb'), progress=False)
    rng = np.random.default_rng(0)
    rows = []
    for c in ('a', 'b'):
        for i in range(24):
            f = d/'two'/c/f"t{i % 12}_{i}.png"; f.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(f)
            rows.append(dict(path=f"{c}/{f.name}", group=f"t{i % 12}"))
    pd.DataFrame(rows).to_csv(d/'two'/'groups.csv', index=False)
    pd.DataFrame(dict(path=[r['path'] for r in rows[:24]], label='a', group=[r['group'] for r in rows[:24]])).to_csv(d/'two'/'one_class.csv', index=False)
    return d

def _data(d:Path) -> dict:
    return {'synthetic': 'synthetic', 'folder': f"folder:{d/'two'}", 'one_class': f"csv:{d/'two'/'one_class.csv'}"}

numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32), st.integers(-3, 3))
ANY = dict(   # every field, from valid and invalid values
    dataset=st.sampled_from(['synthetic', 'folder', 'one_class', 'imagenet']),
    n_per_class=st.one_of(st.none(), st.integers(-1, 30)),
    crop=st.one_of(st.none(), st.sampled_from([0, 39, 40, 48, 5000])),
    groups=st.one_of(st.none(), st.sampled_from([r'^(t\d+)_', '(', ''])),
    models=st.sampled_from([['cnn'], 'cnn', [], ['cnm'], ['cnn', 'cnn']]),
    backbones=st.sampled_from([[], [], ['uni3'], ['effnet_lite0_in1k']]),
    protocols=st.sampled_from([['linear_probe'], [], ['scratch'], ['probe']]),
    flag_limits=st.lists(st.integers(-1, 12), max_size=2),
    seeds=st.one_of(st.lists(st.sampled_from([-1, 0, 1, 2**32, 2**40]), max_size=2), st.just('first')),
    split_seed=st.sampled_from([-1, 0, 3, 2**33]),
    data_seed=st.sampled_from([-5, 0, 1]),
    blur_sigmas=st.lists(numbers, max_size=2),
    blur_placements=st.sampled_from([['post'], ['pre', 'post'], [], ['side']]),
    epochs=st.one_of(st.none(), st.integers(-1, 2), st.dictionaries(st.sampled_from(['cnn', 'cnnn', 'default', 'scratch', 'linear_probe']), st.integers(0, 2), max_size=2)),
    lr=st.one_of(st.none(), numbers),
    batch_size=st.integers(-1, 64),
    min_steps=st.one_of(st.none(), st.integers(-1, 6)),
    augment=st.sampled_from([True, False, {'shift': 2}, {'shfit': 2}]),
    class_weight=st.sampled_from([None, 'balanced', 'heavy']),
    n_boot=st.integers(-1, 5),
    gpus_per_run=st.one_of(st.none(), numbers),
    workers=st.integers(0, 2),
    device=st.sampled_from(['cpu', 'auto', 'gpu']),
)
VALID = dict(   # the same fields from valid values only (data can still refuse them: too few cells, one class)
    dataset=st.sampled_from(['synthetic', 'folder', 'one_class']), n_per_class=st.one_of(st.none(), st.integers(8, 30)),
    crop=st.sampled_from([None, 40, 48]), models=st.sampled_from([['cnn'], 'cnn']), backbones=st.sampled_from([[], ['effnet_lite0_in1k']]),
    flag_limits=st.lists(st.integers(1, 12), min_size=1, max_size=2), seeds=st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=2),
    split_seed=st.integers(0, 2**32 - 1), blur_sigmas=st.lists(st.floats(0, 3), max_size=2), blur_placements=st.sampled_from([['post'], ['pre', 'post']]),
    epochs=st.one_of(st.integers(1, 2), st.dictionaries(st.sampled_from(['cnn', 'default', 'scratch', 'linear_probe']), st.integers(1, 2), max_size=2)),
    lr=st.one_of(st.none(), st.floats(1e-5, 1e-2)), batch_size=st.integers(1, 64), min_steps=st.integers(0, 6),
    augment=st.sampled_from([True, False, {'shift': 2}]), class_weight=st.sampled_from([None, 'balanced']), n_boot=st.integers(0, 5))
BASE = dict(epochs=1, models=['cnn'], backbones=[], n_boot=5, n_per_class=24, blur_sigmas=[1.6])   # what a field left out by an example falls back to (cheap runs)
configs = st.one_of(st.fixed_dictionaries({}, optional=ANY), st.fixed_dictionaries({}, optional=VALID)).map(lambda d: {**BASE, **d})

class _Checked(Exception): "Raised by `checked`: every check passed, nothing written yet."

def _first_run(params:dict, run_dir:Path):
    "The experiment notebook's cells with the run's parameters, in this process: what its kernel would do."
    cells = [c for c in json.loads(experiment_notebook().read_text())['cells'] if c['cell_type'] == 'code']
    ns = {}
    exec(''.join(cells[0]['source']), ns)   # the parameters cell: defaults, then the run's values, as papermill injects them
    ns.update({k: v for k, v in params.items() if k in ns or k in ('run_id', 'out_dir')}, out_dir=str(run_dir), device='cpu', cost_repeats=1)
    for c in cells[1:]: exec(''.join(c['source']), ns)
    assert (run_dir/'runs'/params['run_id']/'result.json').exists()

def test_any_config_is_refused_untouched_or_starts(place, tmp_path_factory):
    out, seen = place/'finished', {'refused': 0, 'started': 0}
    before = tree_hashes(out)
    @settings(max_examples=30, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow],
              phases=[Phase.explicit, Phase.generate])   # no shrinking: each example costs seconds; the failing one is printed as drawn
    @given(d=configs)
    def check(d):
        d = dict(d)
        if d.get('dataset') in ('folder', 'one_class', 'synthetic'): d['dataset'] = _data(place)[d['dataset']]
        try: run_study(d, out, progress=False, checked=lambda: (_ for _ in ()).throw(_Checked()))
        except CellnbError as e:
            assert '\n' not in str(e).strip(), str(e)
            assert tree_hashes(out) == before, f"refused ({e}) but {out} changed"
            seen['refused'] += 1
            return
        except _Checked: pass
        assert tree_hashes(out) == before
        _first_run(expand(d)[0], tmp_path_factory.mktemp('run'))
        seen['started'] += 1
    check()
    assert seen['refused'] >= 5 and seen['started'] >= 3, seen   # both outcomes were tried
