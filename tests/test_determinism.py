"""Issue 7 determinism and safety: the same seed twice on CPU gives identical metrics (scratch model and probe); a model
file with a pickled code payload is refused by `cellnb-predict`; a whole tiny study runs with the network disabled.

Covered elsewhere and not repeated: a backbone weights file with a code payload is refused and the payload never runs
(tests/test_foundation.py::test_code_payload_refused); training history and probabilities repeat for the scratch cnn
(tests/test_train.py::test_determinism_cpu).
"""
import os, sys, subprocess
from pathlib import Path
import numpy as np, pandas as pd, pytest, torch
from cellnb.synthetic import synthetic_ihc
from cellnb.data import group_split
from cellnb.train import fit_cell_model
from cellnb.evaluate import evaluate
from cellnb.sweep import StudyConfig, run_study

BIN = Path(sys.executable).parent

@pytest.fixture(scope='module')
def split():
    return group_split(synthetic_ihc(16, seed=0), seed=0)

def fit_eval(split, protocol, model, seed, **kw):
    tr, va, te = split
    fm = fit_cell_model(protocol, model, tr, va, seed=seed, device='cpu', progress=False, **kw)
    preds, metrics = evaluate(fm, te, n_boot=50, seed=0)
    metrics = {k: v for k, v in metrics.items() if 'seconds' not in k}   # wall-clock time is the one thing allowed to vary
    return fm, preds.filter(like='prob_').to_numpy(), pd.Series(metrics, dtype=object)

@pytest.mark.parametrize('protocol, model, kw', [
    ('scratch', 'custom_vit', dict(epochs=1, bs=16)),                 # the study's small-patch ViT (attention, dropout, augmentation)
    ('linear_probe', 'effnet_lite0_in1k', dict(cache=False)),          # embeddings recomputed both times, then the probe
])
def test_same_seed_same_metrics(split, protocol, model, kw):
    _, pa, ma = fit_eval(split, protocol, model, 7, **kw)
    _, pb, mb = fit_eval(split, protocol, model, 7, **kw)
    assert np.array_equal(pa, pb)
    assert ma.equals(mb), pd.concat([ma, mb], axis=1)[ma != mb]
    assert {'accuracy', 'macro_f1', 'macro_f1_ci_low'} <= set(ma.index)

class _Payload:
    def __reduce__(self): return (os.system, (f"touch {self.marker}",))

@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_predict_refuses_a_model_with_a_code_payload(split, tmp_path):
    "A run's model.pt is only read with torch.load(weights_only=True): a pickle that would run code is refused, never run."
    tr, va, _ = split
    fm = fit_cell_model('scratch', 'cnn', tr, va, epochs=1, bs=16, device='cpu', progress=False)
    fm.save(tmp_path/'run'/'model')
    p = _Payload(); p.marker = tmp_path/'pwned'
    sd = torch.load(tmp_path/'run'/'model'/'model.pt', weights_only=True)
    torch.save({**sd, 'evil': p}, tmp_path/'run'/'model'/'model.pt')
    r = subprocess.run([str(BIN/'cellnb-predict'), '--model', str(tmp_path/'run'), '--data', 'synthetic', '--n-per-class', '4',
                        '--out', str(tmp_path/'p.csv')], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stdout + r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("cellnb-predict: error: model in ") and "refused" in last and "never unpickles code" in last, last
    assert 'Traceback' not in r.stderr and not (tmp_path/'p.csv').exists()
    assert not (tmp_path/'pwned').exists()

# The run kernels are other processes, out of reach of the in-process `no_network` fixture: this sitecustomize (put on
# their PYTHONPATH) installs the same guard in every Python process the study starts and logs any attempt.
GUARD = '''import os, socket
_log = os.environ.get("CELLNB_NET_LOG")
if _log:
    open(os.path.join(_log, "guard-%d" % os.getpid()), "w").close()
    def _local(a):
        h = a[0] if isinstance(a, tuple) and a else a
        h = h.decode() if isinstance(h, bytes) else h
        return not isinstance(h, str) or h.startswith(("127.", "localhost", "::1", "0.0.0.0", "/"))
    def _refuse(what):
        with open(os.path.join(_log, "attempts"), "a") as f: f.write("%d %r\\n" % (os.getpid(), what))
        raise OSError("network disabled in tests: %r" % (what,))
    _connect, _connect_ex, _gai = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo
    def connect(self, a, *r, **k):
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _local(a): _refuse(a)
        return _connect(self, a, *r, **k)
    def connect_ex(self, a, *r, **k):
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _local(a): _refuse(a)
        return _connect_ex(self, a, *r, **k)
    def getaddrinfo(host, *r, **k):
        if not _local(host): _refuse(host)
        return _gai(host, *r, **k)
    socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = connect, connect_ex, getaddrinfo
'''

def test_tiny_study_without_network(no_network, tmp_path, monkeypatch):
    "The whole tiny study (sweep in this process, each run in a kernel process) completes with every socket guarded."
    guard, log = tmp_path/'guard', tmp_path/'netlog'
    guard.mkdir(); log.mkdir()
    (guard/'sitecustomize.py').write_text(GUARD)
    monkeypatch.setenv('PYTHONPATH', os.pathsep.join([str(guard)] + ([os.environ['PYTHONPATH']] if os.environ.get('PYTHONPATH') else [])))
    monkeypatch.setenv('CELLNB_NET_LOG', str(log))
    df = run_study(StudyConfig.tiny(), tmp_path/'study', progress=False)
    assert (df.status == 'ok').all() and df.run_id.nunique() == 1, df.error.tolist()
    kernels = [p for p in log.glob('guard-*') if p.name != f"guard-{os.getpid()}"]
    assert kernels, "the run kernel did not load the network guard"
    assert not (log/'attempts').exists(), (log/'attempts').read_text()
