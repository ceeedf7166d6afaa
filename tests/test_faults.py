"""Issue 7 faults that are not covered elsewhere: a run's kernel killed (e.g. by the OOM killer), Ctrl-C on a running
`cellnb-study`, and run files damaged between two invocations.

Covered in other files and not repeated here:
- kill -9 of a running cellnb-study, then the same command again: every run exactly once, no corrupt JSON:
  tests/test_sweep.py::test_kill9_midway_then_resume.
- a run that raises is recorded (status, error, error.txt), the others complete, the CLI exits 1 with a summary:
  tests/test_sweep.py::test_failure_isolation_resume_and_growth, tests/test_cli.py::test_failed_run_summary_and_exit_1.
- two studies in one output folder: the second is refused by the lock: tests/test_sweep.py::test_lock_refuses_second_study.
- a corrupted embedding-cache file (bad checksum, truncated, broken manifest) is recomputed:
  tests/test_foundation.py::test_embed_corrupt_cache_recomputed.
"""
import json, os, sys, time, signal, subprocess
from pathlib import Path
import nbformat, pandas as pd, pytest
from cellnb.sweep import StudyConfig

BIN = Path(sys.executable).parent

# A toy experiment with the contract of nbs/experiments/cell_experiment.ipynb (parameters cell, rows written
# atomically to out_dir/runs/<run_id>/<result_file>); model 'oom' kills its own kernel like the OOM killer would.
TOY = '''import os, time, json, signal
from pathlib import Path
time.sleep(float(os.environ.get('TOY_SLEEP', 0)))
if model == 'oom': os.kill(os.getpid(), signal.SIGKILL)
rows = [dict(run_id=run_id, dataset=dataset, model=model, family='scratch', protocol=protocol, flag_limit=flag_limit,
             seed=seed, condition='clean', sigma=0.0, accuracy=0.5, status='ok')]
p = Path(out_dir)/'runs'/run_id/result_file
p.with_suffix('.tmp').write_text(json.dumps(rows)); os.replace(p.with_suffix('.tmp'), p)'''

@pytest.fixture
def toy(tmp_path):
    nb = nbformat.v4.new_notebook(metadata={'kernelspec': {'name': 'python3', 'display_name': 'Python 3', 'language': 'python'}})
    nb.cells = [nbformat.v4.new_code_cell("dataset='synthetic'\nmodel='cnn'\nprotocol='scratch'\nflag_limit=8\nseed=0\n"
                                          "out_dir='.'\nrun_id='adhoc'\nresult_file='result.json'", metadata={'tags': ['parameters']}),
                nbformat.v4.new_code_cell(TOY)]
    nbformat.write(nb, tmp_path/'toy.ipynb')
    return tmp_path/'toy.ipynb'

def study_cmd(tmp_path, toy, **cfg):
    StudyConfig.tiny(**cfg).to_yaml(tmp_path/'s.yaml')
    return [str(BIN/'cellnb-study'), '--config', str(tmp_path/'s.yaml'), '--out', str(tmp_path/'study'), '--notebook', str(toy),
            '--no-report', '--quiet']

def results(study:Path) -> pd.DataFrame:
    for p in study.glob('runs/*/*.json'): json.loads(p.read_text())   # no corrupt JSON anywhere
    return pd.read_parquet(study/'results.parquet')

def test_killed_kernel_is_a_failed_run(tmp_path, toy):
    "A run whose kernel dies (OOM killer, segfault) is recorded as failed with the reason; the other runs complete; exit 1."
    r = subprocess.run(study_cmd(tmp_path, toy, models=['cnn', 'oom']), capture_output=True, text=True, timeout=300)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "1 of 2 runs ok, 1 failed" in r.stdout and "oom/scratch" in r.stdout and 'Traceback' not in r.stdout + r.stderr
    df = results(tmp_path/'study')
    bad = df[df.model == 'oom'].iloc[0]
    assert bad.status == 'failed' and 'died' in bad.error.lower(), bad.error
    assert (df[df.model == 'cnn'].status == 'ok').all()

def test_ctrl_c_stops_cleanly_and_rerun_resumes(tmp_path, toy):
    "Ctrl-C (SIGINT to the terminal's process group) stops the study and its kernels; the same command resumes."
    cmd = study_cmd(tmp_path, toy, seeds=[0, 1, 2, 3, 4, 5])
    env = dict(os.environ, TOY_SLEEP='1.5')
    # a shell's background job (`make test &`) inherits SIGINT ignored, and Python keeps it ignored: restore the default
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    study, t0 = tmp_path/'study', time.time()
    while len(list(study.glob('runs/*/result.json'))) < 2 and time.time() - t0 < 120: time.sleep(0.1)
    os.killpg(p.pid, signal.SIGINT)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 130, out + err
    assert err.strip().splitlines()[-1] == "cellnb-study: interrupted; rerun the same command to resume" and 'Traceback' not in err
    time.sleep(0.5)
    with pytest.raises(ProcessLookupError): os.killpg(p.pid, 0)    # no kernel left running in the background
    done = list(study.glob('runs/*/result.json'))
    assert 2 <= len(done) < 6 and not list(study.glob('runs/*/.result.pending.json'))
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "6 of 6 runs ok" in r.stdout, r.stdout + r.stderr
    df = results(study)
    assert len(df) == 6 and df.run_id.nunique() == 6 and (df.status == 'ok').all()

def test_damaged_run_files_are_restored_or_redone(tmp_path, toy):
    """A result.json or params.json damaged between two invocations (disk full, a crash, a bad copy) is never trusted:
    a damaged result.json is named, set aside as result.json.damaged and restored from results.parquet, which holds
    the run's rows (so the run is not redone); without such rows the run is redone; a damaged params.json is rewritten."""
    cmd = study_cmd(tmp_path, toy, seeds=[0, 1, 2])
    assert subprocess.run(cmd, capture_output=True, timeout=300).returncode == 0
    study = tmp_path/'study'
    runs = sorted(study.glob('runs/*/'))
    (runs[0]/'result.json').write_text('[{"run_id": "')                        # cut short
    (runs[1]/'params.json').write_text('')                                      # emptied
    kept = (runs[2]/'result.json').stat().st_mtime_ns
    ran = (runs[0]/'output.ipynb').stat().st_mtime_ns
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "3 of 3 runs ok" in r.stdout, r.stdout + r.stderr
    assert f"cellnb-study: warning: {runs[0]/'result.json'} is damaged" in r.stderr and "its 1 rows restored from results.parquet" in r.stderr
    df = results(study)
    assert len(df) == 3 and sorted(df.run_id) == sorted(d.name for d in runs) and (df.status == 'ok').all()
    assert json.loads((runs[1]/'params.json').read_text())['run_id'] == runs[1].name
    assert (runs[2]/'result.json').stat().st_mtime_ns == kept                   # complete runs are not redone
    assert (runs[0]/'output.ipynb').stat().st_mtime_ns == ran and (runs[0]/'result.json.damaged').read_text() == '[{"run_id": "'
    # a damaged result.json whose rows the table lacks (the table is damaged too) is set aside and its run redone
    (runs[0]/'result.json').write_text('{}'); (study/'results.parquet').write_bytes(b'garbage')
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "3 of 3 runs ok" in r.stdout and "rerun the study to redo that run" in r.stderr, r.stdout + r.stderr
    assert (runs[0]/'output.ipynb').stat().st_mtime_ns > ran and (study/'results.parquet.damaged').read_bytes() == b'garbage'
    assert len(results(study)) == 3
