"""The commands users touch: cellnb-study (exit codes, failure summary, report), cellnb-report, cellnb-predict."""
import json, os, sys, subprocess
from pathlib import Path
import numpy as np, pandas as pd, pytest
from cellnb.sweep import StudyConfig

BIN = Path(sys.executable).parent

def sh(*args, timeout=600, **kw):
    return subprocess.run([str(BIN/args[0]), *map(str, args[1:])], capture_output=True, text=True, timeout=timeout, **kw)

@pytest.fixture(scope='module')
def study(tmp_path_factory):
    "A tiny study through the CLI with one good run and one that fails while running (a truncated weights file)."
    from cellnb.foundation import BACKBONES
    d = tmp_path_factory.mktemp('cli')
    good = BACKBONES['effnet_lite0_in1k'].packaged()
    (d/'truncated.pth').write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    cfg = d/'study.yaml'
    StudyConfig.tiny(models=['cnn'], backbones=['effnet_lite0_in1k'], weights={'effnet_lite0_in1k': str(d/'truncated.pth')}).to_yaml(cfg)
    r = sh('cellnb-study', '--config', cfg, '--out', d/'study', '--quiet')
    return d/'study', r

def test_failed_run_summary_and_exit_1(study):
    out, r = study
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stdout.startswith("1 of 2 runs ok, ") and ", 1 failed (" in r.stdout.splitlines()[0]   # the ok run may be flagged (one epoch)
    assert "effnet_lite0_in1k/linear_probe" in r.stdout and "truncated.pth is corrupt or truncated" in r.stdout
    assert "Traceback" not in r.stderr + r.stdout
    df = pd.read_parquet(out/'results.parquet')
    assert set(df[df.status == 'failed'].model) == {'effnet_lite0_in1k'}
    assert (df[df.model == 'cnn'].status == 'ok').all() and len(df[df.model == 'cnn']) == 2

def test_report_written_and_printed(study):
    out, r = study
    assert f"report: {out/'report.html'}" in r.stdout
    assert (out/'report.html').stat().st_size > 10_000
    r2 = sh('cellnb-report', out)
    assert r2.returncode == 0, r2.stderr
    assert r2.stdout.strip().endswith(str(out/'report.html'))

def test_report_elsewhere_keeps_the_results(study, tmp_path):
    """cellnb-report from another working folder: a study.yaml whose relative data path (older cellnb wrote them) names
    no run of the folder keeps every run instead of emptying results.parquet."""
    import shutil, yaml
    out, _ = study
    cp = tmp_path/'copy'; shutil.copytree(out, cp)
    y = yaml.safe_load((cp/'study.yaml').read_text())
    (cp/'study.yaml').write_text(yaml.safe_dump(dict(y, dataset='folder', data_path='cells'), sort_keys=False))
    n = len(pd.read_parquet(cp/'results.parquet'))
    r = sh('cellnb-report', cp, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert len(pd.read_parquet(cp/'results.parquet')) == n > 0

def test_report_survives_damaged_files(study, tmp_path):
    "A damaged samples.npz or predictions.parquet leaves its figure out with the reason; the report is still written."
    import shutil, html
    out, _ = study
    cp = tmp_path/'copy'; shutil.copytree(out, cp)
    (cp/'samples.npz').write_bytes(b'garbage')
    rid = pd.read_parquet(cp/'results.parquet').query("model == 'cnn' and status == 'ok'").run_id
    for r_ in rid.unique(): (cp/'runs'/r_/'predictions.parquet').write_bytes(b'PAR1')
    r = sh('cellnb-report', cp)
    assert r.returncode == 0, r.stderr
    page = html.unescape((cp/'report.html').read_text())
    assert f"not drawn: {cp/'samples.npz'} is damaged" in page and "rerun cellnb-study" in page
    assert "predictions.parquet of the best runs" in page and "is damaged in run(s)" in page
    assert "is damaged (" in r.stderr and "left out of the confusion matrices" in r.stderr   # the warning names each file

def test_predict_with_a_run(study, tmp_path):
    out, _ = study
    df = pd.read_parquet(out/'results.parquet')
    rid = df[(df.model == 'cnn') & (df.status == 'ok')].run_id.iloc[0]
    r = sh('cellnb-predict', '--model', out/'runs'/rid, '--data', 'synthetic', '--n-per-class', 10, '--out', tmp_path/'p.csv')
    assert r.returncode == 0, r.stderr
    p = pd.read_csv(tmp_path/'p.csv')
    assert len(p) == 40 and {'cell', 'true', 'pred'} <= set(p.columns)
    assert [c for c in p.columns if c.startswith('prob_')] and abs(p.filter(like="prob_").sum(axis=1) - 1).max() < 1e-4
    r = sh('cellnb-predict', '--model', out/'runs'/rid, '--data', 'synthetic', '--n-per-class', 10, '--out', tmp_path/'t.csv', '--tta')
    assert r.returncode == 0, r.stderr
    t = pd.read_csv(tmp_path/'t.csv')   # the same cells, probabilities averaged over 8 views: close to, not equal to, the plain ones
    assert len(t) == 40 and abs(t.filter(like="prob_").sum(axis=1) - 1).max() < 1e-4
    assert not np.allclose(t.filter(like="prob_").to_numpy(), p.filter(like="prob_").to_numpy())

@pytest.mark.parametrize('args, msg', [
    (['cellnb-study', '--data', 'folder:/no/such/folder'], "does not exist"),
    (['cellnb-study', '--workers', '0'], "workers: 0 must be >= 1"),
    (['cellnb-study', '--config', '{yaml}'], "unknown key 'modles'"),
    (['cellnb-predict', '--model', '/no/such/run', '--data', 'synthetic', '--out', '{tmp}/p.csv'], "is not a folder"),
    (['cellnb-report', '{tmp}'], "is not a study folder"),
])
def test_bad_input_one_line_exit_2(tmp_path, args, msg):
    y = tmp_path/'bad.yaml'; y.write_text("modles: [cnn]\n")
    args = [a.format(yaml=y, tmp=tmp_path) for a in args]
    if args[0] == 'cellnb-study': args += ['--out', str(tmp_path/'out')]
    r = sh(*args)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{args[0]}: error: ") and msg in lines[0], r.stderr
    assert not (tmp_path/'out').exists() and not (tmp_path/'p.csv').exists()  # nothing half-written

def test_refusals_before_the_heavy_imports(tmp_path):
    """A refused config answers without importing torch; a refused --data of cellnb-predict without the training stack
    (fastai, sklearn), and of cellnb-study without the model code (timm, torchvision): the user who typed a wrong path
    waits for the message, not for imports."""
    y = tmp_path/'bad.yaml'; y.write_text("seeds: [-1]\n")
    empty = tmp_path/'cells'; empty.mkdir()
    run = tmp_path/'run'; (run/'model').mkdir(parents=True)
    code = f"""
import sys
from cellnb.cli import study, predict_cmd
from cellnb.core import CellnbError
def refused(f, argv):
    try: f(argv)
    except CellnbError as e: return str(e)
    raise AssertionError('not refused')
m = refused(study, ['--config', {str(y)!r}, '--out', {str(tmp_path/'out')!r}])
assert 'seeds: -1 is not a seed' in m, m
assert 'torch' not in sys.modules, 'a refused config imported torch'
m = refused(predict_cmd, ['--model', {str(run)!r}, '--data', 'folder:/no/such/folder', '--out', {str(tmp_path/'p.csv')!r}])
assert 'does not exist' in m, m
heavy = [k for k in ('fastai', 'sklearn', 'cellnb.train') if k in sys.modules]
assert not heavy, f'a refused --data imported {{heavy}}'
m = refused(study, ['--data', 'folder:{empty}', '--out', {str(tmp_path/'out')!r}])
assert 'is empty' in m, m
heavy = [k for k in ('timm', 'torchvision', 'cellnb.models') if k in sys.modules]
assert not heavy, f'a refused study --data imported {{heavy}} (the model-name check needs none of them)'
"""
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr

def test_bad_batch_size_and_missing_gpu_exit_2(study, tmp_path):
    "Inference batch size < 1, and a CUDA device on a machine without one, are refused before anything is written."
    out, _ = study
    rid = pd.read_parquet(out/'results.parquet').query("model == 'cnn' and status == 'ok'").run_id.iloc[0]
    cases = [(['cellnb-predict', '--model', out/'runs'/rid, '--data', 'synthetic', '--n-per-class', 4, '--out', tmp_path/'p.csv', '--bs', bs],
              f"bs={bs} is invalid; use a batch size >= 1") for bs in (0, -5)]
    import torch
    if not torch.cuda.is_available():
        cases.append((['cellnb-study', '--quick', '--device', 'cuda', '--out', tmp_path/'out'], "device: device='cuda' asked for CUDA but torch sees no GPU"))
    for args, msg in cases:
        r = sh(*args)
        assert r.returncode == 2, r.stdout + r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and msg in lines[0], r.stderr
        assert not (tmp_path/'p.csv').exists() and not (tmp_path/'out').exists()

def test_help():
    for cmd in ('cellnb-study', 'cellnb-report', 'cellnb-predict'):
        r = sh(cmd, '--help')
        assert r.returncode == 0 and 'usage:' in r.stdout

# ---------------------------------------------------------------- issue 50 and 48: writes, exit codes, flagged runs, groups
def test_report_keeps_the_rows_of_a_damaged_run(study, tmp_path):
    "cellnb-report on a study whose ok run has a damaged result.json names it, sets it aside and keeps the run's rows."
    import shutil
    out, _ = study
    cp = tmp_path/'copy'; shutil.copytree(out, cp)
    before = pd.read_parquet(cp/'results.parquet')
    rid = before.query("status == 'ok'").run_id.iloc[0]
    (cp/'runs'/rid/'result.json').write_text('[{"run_id": "')
    r = sh('cellnb-report', cp)
    assert r.returncode == 0, r.stderr
    assert f"cellnb-report: warning: {cp/'runs'/rid/'result.json'} is damaged" in r.stderr and "restored from results.parquet" in r.stderr
    after = pd.read_parquet(cp/'results.parquet')
    assert after.query("status == 'ok'")[['run_id', 'condition', 'macro_f1']].equals(before.query("status == 'ok'")[['run_id', 'condition', 'macro_f1']])
    assert (cp/'runs'/rid/'result.json.damaged').read_text() == '[{"run_id": "' and len(json.loads((cp/'runs'/rid/'result.json').read_text())) == 2

def test_exit_codes_for_the_unexpected(capsys):
    "A file the system refuses is exit 2 naming the file; an error cellnb did not foresee is exit 3 and says it is a bug."
    from cellnb.cli import _main
    def denied(argv): raise PermissionError(13, 'Permission denied', '/study/results.parquet')
    def bug(argv): raise RuntimeError('tensor sizes do not match')
    assert _main('cellnb-report', denied, []) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["cellnb-report: error: /study/results.parquet: Permission denied; check that the path exists, is the right kind (file or folder) and that you may read or write it"]
    assert _main('cellnb-study', bug, []) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "internal error RuntimeError: tensor sizes do not match" in err[0] and "this is a bug in cellnb" in err[0] and "--debug" in err[0]

def test_summary_names_flagged_runs(capsys):
    "Result rows with a `warning` (written by the experiment) make the summary line name the run and the problem."
    from cellnb.sweep import study_summary
    from cellnb.cli import _print_summary
    rows = []
    for m, fl, seed, w in [('cnn', 32, 0, "collapsed: every test cell predicted as 'epithelial'"), ('cnn', 64, 0, None), ('resnet', 32, 1, ''),
                           ('effnet_lite0_in1k', 32, 0, "validation macro-F1 never beat the majority class")]:
        for cond in ('clean', 'post'):
            rows.append(dict(run_id=f"{m}{fl}{seed}", model=m, protocol='scratch' if m != 'effnet_lite0_in1k' else 'linear_probe', flag_limit=fl, seed=seed,
                             condition=cond, status='ok', error=None, warning=w))
    rows.append(dict(run_id='bad', model='cnn', protocol='scratch', flag_limit=128, seed=0, condition=None, status='failed', error='boom', warning=None))
    s = study_summary(pd.DataFrame(rows))
    assert (s['runs'], s['ok'], s['failed'], len(s['flagged'])) == (5, 4, 1, 2)
    _print_summary(Path('/s'), s, 12.0)
    first = capsys.readouterr().out.splitlines()[0]
    assert first == ("4 of 5 runs ok, 2 flagged (see report): cnn FlagLimit 32 seed 0: collapsed: every test cell predicted as 'epithelial'; "
                     "effnet_lite0_in1k/linear_probe FlagLimit 32 seed 0: validation macro-F1 never beat the majority class, 1 failed (12 s) in /s")
    assert study_summary(pd.DataFrame(rows).drop(columns='warning'))['flagged'] == []   # results written before the column existed

def test_predict_warns_about_a_flagged_run(study, tmp_path):
    "cellnb-predict with the model of a flagged run says so in one warning line on stderr, and still writes the predictions."
    import shutil
    out, _ = study
    rid = pd.read_parquet(out/'results.parquet').query("model == 'cnn' and status == 'ok'").run_id.iloc[0]
    run = tmp_path/'run'; shutil.copytree(out/'runs'/rid, run)
    rows = json.loads((run/'result.json').read_text())
    (run/'result.json').write_text(json.dumps([dict(r, warning="collapsed: every test cell predicted as 'b'") for r in rows]))
    r = sh('cellnb-predict', '--model', run, '--data', 'synthetic', '--n-per-class', 4, '--out', tmp_path/'p.csv')
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip().splitlines() == ["cellnb-predict: warning: the study flagged this model's run: collapsed: every test cell predicted as 'b'; "
                                             "treat its predictions with care (see the study's report)"]
    assert len(pd.read_csv(tmp_path/'p.csv')) == 16

def test_predict_groups_from_file_names(study, tmp_path):
    "--groups gives the group column of unlabelled crops named <tile>_<n>.png."
    from PIL import Image
    out, _ = study
    rid = pd.read_parquet(out/'results.parquet').query("model == 'cnn' and status == 'ok'").run_id.iloc[0]
    rng = np.random.default_rng(0)
    (tmp_path/'crops').mkdir()
    for i in range(4): Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(tmp_path/'crops'/f"img{i % 2}_{i}.png")
    r = sh('cellnb-predict', '--model', out/'runs'/rid, '--data', f"folder:{tmp_path/'crops'}", '--groups', r'^(img\d+)_\d+$', '--out', tmp_path/'p.csv')
    assert r.returncode == 0, r.stderr
    p = pd.read_csv(tmp_path/'p.csv')
    assert list(p.source) == ['img0_0.png', 'img0_2.png', 'img1_1.png', 'img1_3.png'] and list(p.group) == ['img0', 'img0', 'img1', 'img1']

def test_predict_compile_matches_eager(tmp_path):
    "cellnb-predict --compile (torch.compile of a CNN on the CPU, about a minute) writes the eager run's probabilities within 1e-4 and names its path."
    import torch, torch.nn as nn
    from cellnb.models import create_model
    from cellnb.train import FittedModel
    from cellnb.datasets import load_dataset
    torch.manual_seed(0)
    net = create_model('cnn', 4)
    for m in net.modules():   # batch-norm statistics from data-like inputs: random weights with default statistics give near-constant outputs
        if isinstance(m, nn.modules.batchnorm._BatchNorm): m.reset_running_stats(); m.momentum = None
    with torch.no_grad(): net.train()(torch.randn(32, 3, 40, 40))
    cs = load_dataset('synthetic', n_per_class=2, seed=0)
    FittedModel('scratch', 'cnn', cs.classes, cs.size, model=net.eval()).save(tmp_path/'model')
    args = ('cellnb-predict', '--model', tmp_path/'model', '--data', 'synthetic', '--n-per-class', 8, '--bs', 32, '--device', 'cpu')
    e, c = sh(*args, '--out', tmp_path/'e.csv'), sh(*args, '--out', tmp_path/'c.csv', '--compile')
    assert e.returncode == 0 and c.returncode == 0, e.stderr + c.stderr
    assert 'inference path' not in e.stdout and c.stdout.splitlines()[1].startswith('inference path: compiled (compiled in '), c.stdout
    pe, pc = pd.read_csv(tmp_path/'e.csv'), pd.read_csv(tmp_path/'c.csv')
    probs = lambda p: p.filter(like='prob_').to_numpy()
    assert len(pe) == 32 and probs(pe).std(0).max() > 1e-3 and np.allclose(probs(pc), probs(pe), atol=1e-4, rtol=1e-4)
    assert list(pc.pred) == list(pe.pred)

def test_predict_compile_refuses_a_linear_probe(tmp_path):
    "--compile on a linear-probe run: one line, exit 2, nothing written."
    (tmp_path/'model').mkdir()
    (tmp_path/'model'/'config.json').write_text(json.dumps(dict(protocol='linear_probe', model_name='effnet_lite0_in1k', classes=['a', 'b'], src_size=40)))
    np.savez(tmp_path/'model'/'probe.npz', coef=np.zeros((1, 4)), intercept=np.zeros(1), mean=np.zeros(4), scale=np.ones(4), label_idx=np.arange(2))
    r = sh('cellnb-predict', '--model', tmp_path/'model', '--data', 'synthetic', '--out', tmp_path/'p.csv', '--compile')
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [r.stderr.strip()] and '--compile is for trained networks' in r.stderr, r.stderr
    assert not (tmp_path/'p.csv').exists()
