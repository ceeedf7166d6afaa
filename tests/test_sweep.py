"""Study runner: config validation, run ids, papermill runs, resume after kill -9, failure isolation, lock, Ray."""
import json, os, sys, time, signal, shutil, subprocess
from pathlib import Path
import nbformat, pandas as pd, pytest, yaml
from cellnb.core import CellnbError
from cellnb.sweep import (StudyConfig, expand, run_id, run_study, collect, study_lock, study_summary,
                          experiment_notebook, load_predictions)

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# A toy experiment notebook with the same contract as nbs/experiments/cell_experiment.ipynb: it writes its rows at
# once (after TOY_SLEEP seconds) and fails for model 'boom'. It tests the sweep machinery in seconds.
TOY = '''import os, time, json
from pathlib import Path
time.sleep(float(os.environ.get('TOY_SLEEP', 0)))
if model == 'boom': raise ValueError(f"unknown model {model!r}")
rows = [dict(run_id=run_id, dataset=dataset, model=model, family='scratch', protocol=protocol, flag_limit=flag_limit,
             seed=seed, condition=c, sigma=s, accuracy=0.5, status='ok') for c, s in [('clean', 0.0), ('post', 1.6)]]
p = Path(out_dir)/'runs'/run_id/result_file
p.with_suffix('.tmp').write_text(json.dumps(rows)); os.replace(p.with_suffix('.tmp'), p)'''

def toy_notebook(path, code=TOY):
    "An experiment notebook: the contract's parameters cell, then `code`."
    nb = nbformat.v4.new_notebook(metadata={'kernelspec': {'name': 'python3', 'display_name': 'Python 3', 'language': 'python'}})
    nb.cells = [nbformat.v4.new_code_cell("dataset='synthetic'\nmodel='cnn'\nprotocol='scratch'\nflag_limit=8\nseed=0\n"
                                          "out_dir='.'\nrun_id='adhoc'\nresult_file='result.json'", metadata={'tags': ['parameters']}),
                nbformat.v4.new_code_cell(code)]
    nbformat.write(nb, path)
    return Path(path)

@pytest.fixture
def toy(tmp_path): return toy_notebook(tmp_path/'toy.ipynb')

def _all_json_ok(study):
    for p in study.glob('runs/*/*.json'): json.loads(p.read_text())

# ---------------------------------------------------------------- config
def test_yaml_unknown_key_and_wrong_type(tmp_path):
    p = tmp_path/'s.yaml'
    p.write_text("models: [cnn]\nflag_limit: [32]\n")
    with pytest.raises(CellnbError, match=r"unknown key 'flag_limit'"): StudyConfig.from_yaml(p)
    p.write_text("models: [cnn]\nseeds: [0, one]\n")
    with pytest.raises(CellnbError, match=r"seeds: expected a list of integers, got \[0, 'one'\]"): StudyConfig.from_yaml(p)
    p.write_text("models: cnn\nepochs: 2.5\n")
    with pytest.raises(CellnbError, match=r"epochs: expected an integer"): StudyConfig.from_yaml(p)
    p.write_text("- a\n- b\n")
    with pytest.raises(CellnbError, match="mapping"): StudyConfig.from_yaml(p)
    with pytest.raises(CellnbError, match="does not exist"): StudyConfig.from_yaml(tmp_path/'nope.yaml')

def test_yaml_roundtrip(tmp_path):
    c = StudyConfig.quick()
    c.to_yaml(tmp_path/'s.yaml')
    assert StudyConfig.from_yaml(tmp_path/'s.yaml') == c
    assert yaml.safe_load((tmp_path/'s.yaml').read_text())['models'] == ['cnn', 'resnet', 'custom_vit']

def test_real_data_yaml_keeps_every_cell(tmp_path):
    "A YAML that names real data and leaves n_per_class out studies every cell; only the generator gets a count."
    p = tmp_path/'s.yaml'
    p.write_text("dataset: crchisto\nmodels: [cnn]\n")
    assert StudyConfig.from_yaml(p).n_per_class is None
    p.write_text("dataset: folder:/data/cells\nmodels: [cnn]\nn_per_class: 500\n")
    assert StudyConfig.from_yaml(p).n_per_class == 500
    p.write_text("models: [cnn]\n")
    assert StudyConfig.from_yaml(p).n_per_class == 240   # synthetic: 240 generated cells per class

def test_expand_ids_and_pairs():
    c = StudyConfig.quick()
    runs = expand(c)
    assert len(runs) == (3 + 1) * 3 * 2
    assert {(r['model'], r['protocol']) for r in runs} == {('cnn', 'scratch'), ('resnet', 'scratch'), ('custom_vit', 'scratch'),
                                                          ('effnet_lite0_in1k', 'linear_probe')}
    assert all(len(r['run_id']) == 12 and r['run_id'] == run_id(r) for r in runs)
    assert [r['run_id'] for r in expand(StudyConfig.quick())] == [r['run_id'] for r in runs]  # stable
    # the quick grid satisfies `make study`'s spec
    assert 'custom_vit' in c.models and len(c.flag_limits) == 3 and len(c.seeds) == 2
    assert set(c.blur_placements) == {'source', 'pre', 'post'} and len(c.blur_sigmas) == 4   # a slope is a fit over four sigmas

def test_parameters_tag_survives_nbdev_clean(tmp_path):
    nb = tmp_path/'nbs'/'cell_experiment.ipynb'
    nb.parent.mkdir()
    shutil.copy(experiment_notebook(), nb)
    subprocess.run([str(BIN/'nbdev-clean'), '--fname', str(nb)], cwd=REPO, check=True, capture_output=True)
    cells = json.loads(nb.read_text())['cells']
    first_code = next(c for c in cells if c['cell_type'] == 'code')
    assert 'parameters' in first_code['metadata'].get('tags', [])
    import papermill as pm
    assert {'model', 'protocol', 'flag_limit', 'seed', 'out_dir', 'run_id', 'result_file'} <= set(pm.inspect_notebook(str(nb)))

# ---------------------------------------------------------------- sweep machinery (toy experiment)
def test_failure_isolation_resume_and_growth(tmp_path, toy):
    study = tmp_path/'study'
    df = run_study(StudyConfig.tiny(models=['cnn', 'boom'], seeds=[0, 1]), study, notebook=toy, workers=2, progress=False)
    s = study_summary(df)
    assert (s['runs'], s['ok'], s['failed']) == (4, 2, 2)
    bad = df[df.status == 'failed']
    assert set(bad.model) == {'boom'} and bad.error.str.contains("unknown model 'boom'").all()
    for rid in bad.run_id: assert "ValueError" in (study/'runs'/rid/'error.txt').read_text()
    assert (study/'study.yaml').exists() and (study/'samples.npz').exists() and (study/'results.parquet').exists()
    assert len(pd.read_parquet(study/'results.parquet')) == 2 * 2 + 2
    mt = {p: p.stat().st_mtime_ns for p in study.glob('runs/*/result.json')}
    # rerun without retrying failures: nothing executes
    run_study(StudyConfig.tiny(models=['cnn', 'boom'], seeds=[0, 1]), study, notebook=toy, retry_failed=False, progress=False)
    assert {p: p.stat().st_mtime_ns for p in study.glob('runs/*/result.json')} == mt
    # grown grid: only the new runs execute
    df3 = run_study(StudyConfig.tiny(models=['cnn'], seeds=[0, 1, 2], flag_limits=[8, 16]), study, notebook=toy, progress=False)
    new = set(study.glob('runs/*/result.json')) - set(mt)
    assert len(new) == 4  # seed 2 at 8, and seeds 0..2 at 16
    assert all(p.stat().st_mtime_ns == t for p, t in mt.items())
    assert len(df3) == 6 * 2 and not df3.duplicated(['run_id', 'condition', 'sigma']).any()

def test_a_kernel_that_never_started_is_started_again(tmp_path, toy, monkeypatch):
    "A busy machine (or a port race between workers) can kill a kernel before its first reply: the run starts again."
    import papermill as pm
    real, calls, died = pm.execute_notebook, [], []
    def flaky(*a, **k):
        calls.append((k.get("start_timeout"), k["parameters"].get("model")))
        if not died: died.append(1); raise RuntimeError("Kernel died before replying to kernel_info")
        return real(*a, **k)
    monkeypatch.setattr(pm, 'execute_notebook', flaky)
    df = run_study(StudyConfig.tiny(), tmp_path/'study', notebook=toy, progress=False)
    assert (df.status == "ok").all() and len(calls) == 2 and calls[0][0] == 120, calls
    # any other error of the notebook is the run's failure, recorded once and not retried
    calls.clear()
    df = run_study(StudyConfig.tiny(models=['boom']), tmp_path/'study', notebook=toy, progress=False)
    assert calls == [(120, "boom")] and (df[df.model == "boom"].status == "failed").all(), calls

def test_lock_refuses_second_study(tmp_path, toy):
    study = tmp_path/'study'; study.mkdir()
    with study_lock(study):
        with pytest.raises(CellnbError, match=rf"another study is running in {study} \(pid {os.getpid()}\)"):
            run_study(StudyConfig.tiny(), study, notebook=toy, progress=False)
        r = subprocess.run([str(BIN/'cellnb-study'), '--out', str(study), '--notebook', str(toy), '--no-report', '--quiet'],
                           capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip() == f"cellnb-study: error: another study is running in {study} (pid {os.getpid()}); wait for it to finish or choose another output folder"

def test_kill9_midway_then_resume(tmp_path, toy):
    "kill -9 a running cellnb-study, rerun the same command: every run exactly once, no corrupt JSON."
    study = tmp_path/'study'
    cfg = tmp_path/'s.yaml'
    StudyConfig.tiny(models=['cnn'], seeds=[0, 1, 2, 3, 4, 5]).to_yaml(cfg)
    cmd = [str(BIN/'cellnb-study'), '--config', str(cfg), '--out', str(study), '--notebook', str(toy), '--no-report', '--quiet']
    env = dict(os.environ, TOY_SLEEP='1.5')
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    t0 = time.time()
    while len(list(study.glob('runs/*/result.json'))) < 2 and time.time() - t0 < 120: time.sleep(0.1)
    os.kill(p.pid, signal.SIGKILL); p.wait()
    n_before = len(list(study.glob('runs/*/result.json')))
    assert 2 <= n_before < 6
    _all_json_ok(study)
    time.sleep(1.5)  # the killed study's kernels notice their parent is gone
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    df = pd.read_parquet(study/'results.parquet')
    assert df.run_id.nunique() == 6 and len(df) == 6 * 2
    assert not df.duplicated(['run_id', 'condition', 'sigma']).any() and (df.status == 'ok').all()
    _all_json_ok(study)
    assert "6 of 6 runs ok" in r.stdout

# ---------------------------------------------------------------- the real experiment notebook
def test_tiny_study_end_to_end(tmp_path):
    study = tmp_path/'study'
    df = run_study(StudyConfig.tiny(), study, progress=False)
    assert (df.status == 'ok').all(), df.error.tolist()
    assert list(df.condition) == ['clean', 'post'] and df.run_id.nunique() == 1
    for c in ('accuracy', 'macro_f1', 'macro_f1_ci_low', 'params', 'gflops', 'latency_ms_per_patch', 'train_seconds'):
        assert df[c].notna().all(), c
    assert (df.n_train_per_class <= 8).all() and json.loads(df.n_train_counts[0])
    rd = study/'runs'/df.run_id[0]
    for f in ('params.json', 'result.json', 'predictions.parquet', 'output.ipynb', 'model/config.json'): assert (rd/f).exists(), f
    assert not list(rd.glob('.*.tmp*')) and not (rd/'.result.pending.json').exists()
    preds = load_predictions(study)
    assert set(preds.condition) == {'clean', 'post'} and (preds.run_id == df.run_id[0]).all()
    assert list(Path(study/'cost').glob('cnn@*.json'))
    # a rerun finds everything complete and runs nothing
    mt = (rd/'result.json').stat().st_mtime_ns
    df2 = run_study(StudyConfig.tiny(), study, progress=False)
    assert (rd/'result.json').stat().st_mtime_ns == mt and len(df2) == len(df)

def test_a_run_killed_mid_training_resumes_at_its_next_epoch(tmp_path):
    "kill -9 a study while its run trains: the rerun resumes the run from its checkpoint and scores as an uninterrupted run."
    from cellnb.train import read_checkpoint
    cfg, epochs = tmp_path/'s.yaml', 16
    StudyConfig.tiny(epochs=epochs).to_yaml(cfg)
    cmd = lambda out: [str(BIN/'cellnb-study'), '--config', str(cfg), '--out', str(out), '--no-report', '--quiet']
    ref = subprocess.run(cmd(tmp_path/'ref'), capture_output=True, text=True, timeout=600)
    assert ref.returncode == 0, ref.stderr
    study = tmp_path/'study'
    p = subprocess.Popen(cmd(study), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0, ck = time.time(), None
    while time.time() - t0 < 300 and p.poll() is None:
        ck = next(iter(study.glob('runs/*/checkpoint.pth')), ck)
        try:
            if ck is not None and read_checkpoint(ck)['epoch'] >= 2: break
        except CellnbError: pass   # the run finished and dropped it: the assert below says so
        time.sleep(0.02)
    import psutil
    procs = [psutil.Process(p.pid), *psutil.Process(p.pid).children(recursive=True)]   # the study and its kernel (own session)
    for q in procs: q.send_signal(signal.SIGKILL)
    psutil.wait_procs(procs, timeout=30)   # the run dies mid-training, as at the end of a session
    assert ck is not None and not (ck.parent/'result.json').exists(), "the run finished before it could be killed"
    done = read_checkpoint(ck)['epoch']
    assert 2 <= done < epochs - 1
    r = subprocess.run(cmd(study), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    out = (ck.parent/'output.ipynb').read_text()
    assert "resumed at epoch" in out and not ck.exists()   # resumed; the final run needs no checkpoint
    a, b = pd.read_parquet(tmp_path/'ref'/'results.parquet'), pd.read_parquet(study/'results.parquet')
    assert (b.status == 'ok').all() and a.run_id.tolist() == b.run_id.tolist()
    for c in ('accuracy', 'macro_f1', 'weighted_f1', 'macro_f1_ci_low'): assert a[c].tolist() == b[c].tolist(), c
    pa, pb = load_predictions(tmp_path/'ref'), load_predictions(study)
    assert pa.drop(columns='run_id').equals(pb.drop(columns='run_id'))
    assert json.loads((ck.parent/'model'/'config.json').read_text())['resumed_at_epoch'] == done + 1

def test_ray_refuses_a_gpu_index_before_anything_runs(tmp_path):
    "Under Ray each run sees only the GPU Ray gave it (cuda:0): cuda:1 would fail in every run, so it fails at once."
    with pytest.raises(CellnbError, match=r"device: 'cuda:1' with executor ray: .* use device: cuda"):
        run_study(StudyConfig.tiny(device='cuda:1'), tmp_path/'study', executor='ray', progress=False)
    assert not (tmp_path/'study').exists()
    StudyConfig.tiny(device='cuda:0', executor='ray').validate(); StudyConfig.tiny(device='cuda:1').validate()   # fine

def test_study_augment_strengths_reach_the_run(tmp_path):
    "A study's `augment` (here a 2-px random translation) is passed through papermill to training and saved with the model."
    study = tmp_path/'study'
    df = run_study(StudyConfig.tiny(augment={'shift': 2}), study, progress=False)
    assert (df.status == 'ok').all(), df.error.tolist()
    rd = study/'runs'/df.run_id[0]
    assert json.loads((rd/'params.json').read_text())['augment'] == {'shift': 2}
    assert json.loads((rd/'model/config.json').read_text())['augment'] == {'shift': 2}

def test_experiment_refuses_bad_blur_before_training(tmp_path):
    "The experiment notebook checks its blur parameters in its first cell: a bad sigma costs seconds, not a training run."
    import papermill as pm
    for sigmas, msg in (([-1.6], "must be finite numbers >= 0"), (['strong'], "must be numbers >= 0")):
        with pytest.raises(pm.PapermillExecutionError, match=msg):
            pm.execute_notebook(str(experiment_notebook()), str(tmp_path/'out.ipynb'), progress_bar=False,
                                parameters=dict(blur_sigmas=sigmas, out_dir=str(tmp_path), run_id='bad'))
        assert not (tmp_path/'runs'/'bad').exists()   # refused before the run folder was made

# ---------------------------------------------------------------- issue 50: writes that cannot lose results; quiet kernels
def test_collect_never_drops_a_good_row(tmp_path, toy):
    """A damaged result.json is reported, set aside and (where the table holds the run) restored from results.parquet;
    a run whose result.json is gone keeps its rows; a damaged results.parquet is set aside and rebuilt from the runs."""
    study = tmp_path/'study'
    df = run_study(StudyConfig.tiny(seeds=[0, 1, 2]), study, notebook=toy, progress=False)
    a, b, c = sorted(df.run_id.unique())
    (study/'runs'/a/'result.json').write_text('[{"run_id": "')          # cut short
    (study/'runs'/b/'result.json').unlink()                              # gone
    with pytest.warns(UserWarning, match=rf"runs/{a}/result.json is damaged \(not readable JSON.*moved to result.json.damaged; its 2 rows restored from results.parquet"):
        df2 = collect(study)
    assert len(df2) == len(df) and sorted(df2.run_id.unique()) == [a, b, c] and (df2.status == 'ok').all()
    assert pd.read_parquet(study/'results.parquet').equals(df2)
    assert (study/'runs'/a/'result.json.damaged').read_text() == '[{"run_id": "'
    assert [r['run_id'] for r in json.loads((study/'runs'/a/'result.json').read_text())] == [a, a]
    assert not (study/'runs'/b/'result.json').exists()                   # nothing invented: the table alone keeps b
    (study/'results.parquet').write_bytes(b'PAR1 garbage')
    with pytest.warns(UserWarning, match="results.parquet is damaged .*moved to results.parquet.damaged"):
        df3 = collect(study)
    assert sorted(df3.run_id.unique()) == [a, c] and (study/'results.parquet.damaged').read_bytes() == b'PAR1 garbage'
    # the study itself restores rather than redoes: a rerun after a damaged result.json runs nothing that the table holds
    (study/'runs'/c/'result.json').write_text('{}')
    out = (study/'runs'/c/'output.ipynb').stat().st_mtime_ns
    with pytest.warns(UserWarning, match=rf"runs/{c}/result.json is damaged \(not a list of result rows"):
        df4 = run_study(StudyConfig.tiny(seeds=[0, 1, 2]), study, notebook=toy, progress=False)
    assert (study/'runs'/c/'output.ipynb').stat().st_mtime_ns == out and (study/'runs'/c/'result.json.damaged').exists()
    assert sorted(df4.run_id.unique()) == [a, b, c] and (df4.status == 'ok').all()   # b was redone: its file was gone

def test_a_finished_kernel_gets_no_sigint(tmp_path, toy, monkeypatch):
    """jupyter_client interrupts a kernel before shutting it down; a SIGINT landing while ipykernel handles a message
    prints `[IPKernelApp] ERROR | KeyboardInterrupt caught in kernel.` in the middle of a normal study. The study's
    kernels are idle when shut down and get no SIGINT."""
    import signal
    from jupyter_client import AsyncKernelManager
    sent, real = [], AsyncKernelManager._async_signal_kernel
    async def spy(self, signum):
        sent.append(signum); return await real(self, signum)
    monkeypatch.setattr(AsyncKernelManager, '_async_signal_kernel', spy)
    df = run_study(StudyConfig.tiny(seeds=[0, 1]), tmp_path/'study', notebook=toy, progress=False)
    assert (df.status == 'ok').all() and df.run_id.nunique() == 2
    assert signal.SIGINT not in sent, sent

def test_groups_reach_the_run(tmp_path):
    "`groups:` is a run parameter (only when given: other run ids are unchanged); a notebook that cannot take it is refused."
    root = tmp_path/'cells'
    from PIL import Image
    import numpy as np
    rng = np.random.default_rng(0)
    for c in ('a', 'b'):
        for i in range(20):
            f = root/c/f"tile{i % 10}_{i}.png"; f.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(f)
    plain = StudyConfig.tiny(dataset=f"folder:{root}", n_per_class=None)
    grouped = StudyConfig.tiny(dataset=f"folder:{root}", n_per_class=None, groups=r'^(tile\d+)_')
    assert 'groups' not in expand(plain)[0] and expand(grouped)[0]['groups'] == r'^(tile\d+)_'
    assert expand(plain)[0]['run_id'] != expand(grouped)[0]['run_id']
    nb = tmp_path/'grouped.ipynb'
    toy_notebook(nb)
    cells = json.loads(nb.read_text())
    cells['cells'][0]['source'] = ''.join(cells['cells'][0]['source']) + "\ngroups=None\ndata_path=None\nsplit_seed=0"
    cells['cells'][1]['source'] = ("import json, os\nfrom pathlib import Path\nfrom cellnb.datasets import load_dataset\nfrom cellnb.data import group_split\n"
        "sp = group_split(load_dataset(f'{dataset}:{data_path}', groups=groups), seed=split_seed)\n"
        "rows = [dict(run_id=run_id, model=model, protocol=protocol, flag_limit=flag_limit, seed=seed, condition='clean', sigma=0.0, status='ok',\n"
        "             split=json.dumps(sp.groups()))]\n"
        "p = Path(out_dir)/'runs'/run_id/result_file\np.with_suffix('.tmp').write_text(json.dumps(rows)); os.replace(p.with_suffix('.tmp'), p)")
    nb.write_text(json.dumps(cells))
    df = run_study(grouped, tmp_path/'study', notebook=nb, progress=False)
    parts = json.loads(df.split.iloc[0])
    assert sorted(sum(parts.values(), [])) == [f"tile{i}" for i in range(10)]   # tiles, never straddling: each in one part
    with pytest.raises(CellnbError, match=r"groups: the experiment notebook .*toy.ipynb has no `groups` parameter"):
        run_study(grouped, tmp_path/'other', notebook=toy_notebook(tmp_path/'toy.ipynb'), progress=False)
    assert not (tmp_path/'other').exists()
