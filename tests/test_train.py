"Tests of cellnb.train: every protocol learns an easy set, the probe reuses the embedding cache, determinism, save/load, bad inputs."
import json
import numpy as np
import pytest
import torch
from cellnb.core import CellnbError
from cellnb.data import CellSet
from cellnb.train import (PROTOCOLS, fit_cell_model, FittedModel, cell_dataloaders, CellDataLoader, last_stage_modules,
                          frozen_bn_modules)

def easy_cells(n_per_class=24, size=48, n_classes=4, seed=0):
    "An easy CellSet: noisy tiles, one colour per class (chance = 1/n_classes)."
    g = np.random.default_rng(seed)
    cols = np.array([[210, 40, 40], [40, 210, 40], [40, 40, 210], [210, 210, 40]])[:n_classes]
    ims, labs = [], []
    for c in range(n_classes):
        for _ in range(n_per_class):
            im = cols[c] + g.normal(0, 25, (size, size, 3))
            ims.append(im.clip(0, 255).astype(np.uint8)); labs.append(c)
    return CellSet(np.stack(ims), labs, [f"c{k}" for k in range(n_classes)], groups=[f"g{i % 6}" for i in range(len(labs))])

@pytest.fixture(scope='module')
def cells():
    cs = easy_cells()
    idx = np.arange(len(cs))
    return cs, cs[idx[idx % 3 != 0]], cs[idx[idx % 3 == 0]]

@pytest.fixture(scope='module')
def tiny_backbone(tmp_path_factory):
    "A tiny timm backbone with (random) weights in a local file: stands in for a foundation model in fast tests."
    timm = pytest.importorskip('timm')
    from safetensors.torch import save_file
    torch.manual_seed(0)
    m = timm.create_model('test_efficientnet', num_classes=0)
    p = tmp_path_factory.mktemp('weights')/'model.safetensors'
    save_file(m.state_dict(), str(p))
    return 'timm:test_efficientnet', str(p)

@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv('CELLNB_CACHE_DIR', str(tmp_path_factory.getbasetemp()/'cellnb-cache'))

TINY = dict(model_kwargs=dict(dims=(8, 16, 16, 16)))   # a narrow 'cnn': the same code path, seconds on CPU

def acc(fm, cs, **kw): return float((fm.predict_proba(cs, **kw).argmax(1) == cs.labels.numpy()).mean())

def nhwc(model):
    "Every convolution weight of `model` in channels-last memory format (fine-tuning trains in NHWC, like `embed`)."
    ws = [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    # 1x1 and depthwise kernels are contiguous in both formats; a full 3x3 kernel (the stem) tells them apart
    return all(w.is_contiguous(memory_format=torch.channels_last) for w in ws) and any(not w.is_contiguous() for w in ws)

def test_loader_plugs_into_fastai(cells):
    cs, tr, va = cells
    dls = cell_dataloaders(tr, va, bs=16, device='cpu')
    xb, yb = dls.train.one_batch()
    assert xb.shape == (16, 3, 40, 40) and yb.dtype == torch.int64
    assert len(dls.train) == 4 and dls.valid.new(shuffle=False).shuffle is False
    assert torch.equal(torch.cat([y for _, y in dls.valid]), va.labels)

def test_precomputed_static_part_gives_same_batches(cells):
    "Computing to-float/blur/resize once per loader gives the batches of the all-per-batch path (same seed)."
    cs, tr, va = cells
    from cellnb.transforms import CellPipeline
    for kw in (dict(augment=True), dict(augment=True, blur='pre', sigma=1.2), dict(blur='post', sigma=0.8, model_size=64)):
        a = CellDataLoader(tr, CellPipeline(tr.size, **kw), bs=16, shuffle=True, device='cpu', seed=5)
        b = a.new(precompute=False)
        assert a.uses_static and not b.uses_static
        for (xa, ya), (xb, yb) in zip(a, b):
            assert torch.equal(ya, yb) and torch.allclose(xa, xb, atol=1e-5)

def test_scratch_learns_and_roundtrips(cells, tmp_path):
    cs, tr, va = cells
    fm = fit_cell_model('scratch', 'cnn', tr, va, epochs=3, bs=8, lr=1e-2, device='cpu', progress=False, **TINY)
    assert fm.family == 'scratch' and fm.train_seconds > 0 and len(fm.history) == 3
    assert {'train_loss', 'valid_loss', 'macro_f1'} <= set(fm.history.columns)
    p = fm.predict_proba(va)
    assert p.shape == (len(va), 4) and np.allclose(p.sum(1), 1, atol=1e-4)
    assert acc(fm, va) > 0.4   # chance: 0.25
    for cond in ('pre', 'post'): assert fm.predict_proba(va, condition=cond, sigma=1.2).shape == (len(va), 4)
    fm.save(tmp_path/'m')
    assert json.loads((tmp_path/'m'/'config.json').read_text())['protocol'] == 'scratch'
    fl = FittedModel.load(tmp_path/'m', device='cpu')   # the default device is CUDA where there is one
    assert np.allclose(fl.predict_proba(va, 'post', 0.8), fm.predict_proba(va, 'post', 0.8), atol=1e-5)
    assert fl.best_epoch == fm.best_epoch and list(fl.classes) == list(cs.classes)

def test_determinism_cpu(cells):
    cs, tr, va = cells
    kw = dict(epochs=2, bs=16, device='cpu', progress=False, seed=3, **TINY)
    a, b = fit_cell_model('scratch', 'cnn', tr, va, **kw), fit_cell_model('scratch', 'cnn', tr, va, **kw)
    assert a.history.drop(columns=['time'], errors='ignore').equals(b.history.drop(columns=['time'], errors='ignore'))
    assert np.array_equal(a.predict_proba(va), b.predict_proba(va))

def test_linear_probe_learns_and_reuses_cache(cells, tiny_backbone, tmp_path):
    from cellnb.foundation import embed
    cs, tr, va = cells
    name, w = tiny_backbone
    fm = fit_cell_model('linear_probe', name, tr, va, weights=w, device='cpu', progress=False)
    assert fm.family == 'pretrained' and acc(fm, va) > 0.5   # an ImageNet-style timm backbone, not a pathology foundation model
    assert embed.last_computed > 0 or True
    # a smaller training subset (as a FlagLimit would give) and another seed: every row is already cached
    sub = tr[np.arange(0, len(tr), 2)]
    fm2 = fit_cell_model('linear_probe', name, sub, va, weights=w, device='cpu', progress=False, seed=1)
    assert embed.last_computed == 0
    fm.save(tmp_path/'p')
    assert (tmp_path/'p'/'probe.npz').exists() and not (tmp_path/'p'/'model.pt').exists()
    fl = FittedModel.load(tmp_path/'p', device='cpu')
    assert np.allclose(fl.predict_proba(va), fm.predict_proba(va), atol=1e-5)
    assert fm.predict_proba(va, condition='pre', sigma=1.2).shape == (len(va), 4)

def test_probe_proba_matches_sklearn(cells, tiny_backbone):
    "The saved-array prediction path reproduces sklearn's predict_proba."
    from sklearn.linear_model import LogisticRegression
    from cellnb.foundation import embed
    cs, tr, va = cells
    name, w = tiny_backbone
    fm = fit_cell_model('linear_probe', name, tr, va, weights=w, device='cpu', progress=False)
    X = lambda c: (embed(fm.backbone, c, resize=160, progress=False, device='cpu').numpy().astype(np.float64) - fm.probe['mean']) / fm.probe['scale']
    clf = LogisticRegression(C=float(fm.probe['C']), max_iter=2000).fit(X(tr), tr.labels.numpy())
    assert np.allclose(clf.predict_proba(X(va)), fm.predict_proba(va), atol=1e-3)

def test_ft_last_trains_only_the_tail(cells, tiny_backbone):
    cs, tr, va = cells
    name, w = tiny_backbone
    from cellnb.foundation import load_backbone
    ref = load_backbone(name, w).state_dict()
    fm = fit_cell_model('ft_last', name, tr, va, weights=w, epochs=2, bs=16, lr=3e-3, device='cpu', progress=False)
    assert acc(fm, va) > 0.4
    tail = tuple(p + '.' for p in fm.model.backbone.cellnb_spec.trainable_tail)
    sd = fm.model.backbone.state_dict()
    changed = {k for k in ref if not torch.equal(ref[k], sd[k])}
    assert changed and all(k.startswith(tail) for k in changed)   # frozen weights AND frozen BN statistics unchanged
    assert nhwc(fm.model)

def test_full_ft_learns(cells, tiny_backbone):
    cs, tr, va = cells
    name, w = tiny_backbone
    fm = fit_cell_model('full_ft', name, tr, va, weights=w, epochs=2, bs=16, lr=3e-3, device='cpu', progress=False)
    assert acc(fm, va) > 0.4 and fm.protocol == 'full_ft'
    assert nhwc(fm.model)

def test_bad_inputs(cells):
    cs, tr, va = cells
    with pytest.raises(CellnbError, match="linear_probe"): fit_cell_model('fine_tune', 'cnn', tr, va)
    with pytest.raises(CellnbError, match="custom_vit"): fit_cell_model('scratch', 'no_such_net', tr, va)
    with pytest.raises(CellnbError, match="backbone 'no_such'"): fit_cell_model('linear_probe', 'no_such', tr, va)
    with pytest.raises(CellnbError, match="valid set is empty"): fit_cell_model('scratch', 'cnn', tr, va[np.zeros(0, dtype=int)])
    with pytest.raises(CellnbError, match="train set is empty"): fit_cell_model('scratch', 'cnn', tr[np.zeros(0, dtype=int)], va)
    other = CellSet(va.images, va.labels, ['a', 'b', 'c', 'd'])
    with pytest.raises(CellnbError, match="differ"): fit_cell_model('scratch', 'cnn', tr, other)
    with pytest.raises(CellnbError, match="epochs"): fit_cell_model('scratch', 'cnn', tr, va, epochs=0)
    one_class = tr[np.flatnonzero(tr.labels.numpy() == 0)]
    with pytest.raises(CellnbError, match="only 1 class"): fit_cell_model('scratch', 'cnn', one_class, va)
    with pytest.raises(CellnbError, match="only 1 class"): fit_cell_model('linear_probe', 'effnet_lite0_in1k', one_class, va)
    with pytest.raises(CellnbError, match="'epoch'"): fit_cell_model('scratch', 'cnn', tr, va, epoch=1)
    with pytest.raises(CellnbError, match="'model_kwargs'"): fit_cell_model('linear_probe', 'effnet_lite0_in1k', tr, va, model_kwargs={})
    with pytest.raises(CellnbError, match="foundation protocols"): fit_cell_model('scratch', 'cnn', tr, va, weights='w.pth')
    with pytest.raises(CellnbError, match="label_smoothing"): fit_cell_model('scratch', 'cnn', tr, va, label_smoothing=1.5)
    with pytest.raises(CellnbError, match="wd="): fit_cell_model('full_ft', 'effnet_lite0_in1k', tr, va, wd=-0.1)
    for cs_ in ([], 1.0, [0], ['a']):
        with pytest.raises(CellnbError, match="Cs="): fit_cell_model('linear_probe', 'effnet_lite0_in1k', tr, va, Cs=cs_)
    for lr in ('abc', [1e-3], 0, -1e-3, float('nan')):
        with pytest.raises(CellnbError, match="lr=.* is invalid"): fit_cell_model('scratch', 'cnn', tr, va, lr=lr)
    for patience in (0, -1, '3', 2.5, True):   # 0 used to switch early stopping off silently, -1 to stop after one epoch
        with pytest.raises(CellnbError, match="patience=.* is invalid"): fit_cell_model('scratch', 'cnn', tr, va, patience=patience)

def test_nan_loss_stops_clearly(cells):
    cs, tr, va = cells
    with pytest.raises(CellnbError, match=r"training diverged: loss is nan at epoch \d+ batch \d+; lower lr"):
        fit_cell_model('scratch', 'cnn', tr, va, epochs=2, lr=1e30, bs=16, device='cpu', progress=False, **TINY)

def test_predict_bad_inputs(cells, tmp_path):
    cs, tr, va = cells
    fm = fit_cell_model('scratch', 'cnn', tr, va, epochs=1, bs=32, device='cpu', progress=False, augment=False, **TINY)
    with pytest.raises(CellnbError, match='condition'): fm.predict_proba(va, condition='blurry')
    with pytest.raises(CellnbError, match='not a CellSet'): fm.predict_proba(va.images)
    # new cells with other class names (e.g. unlabelled data for cellnb-predict) are fine: only images are used
    assert fm.predict_proba(CellSet(va.images, va.labels, ['a', 'b', 'c', 'd'])).shape == (len(va), 4)
    with pytest.raises(CellnbError, match='config.json'): FittedModel.load(tmp_path/'nothing')

@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_scratch_cuda_bf16(cells):
    cs, tr, va = cells
    fm = fit_cell_model('scratch', 'cnn', tr, va, epochs=3, bs=8, lr=1e-2, device='cuda', progress=False, **TINY)
    assert acc(fm, va) > 0.4
    assert fm.predict_proba(va, device='cpu').shape == (len(va), 4)

class _Killed(Exception): "Stands in for a kill right after an epoch's checkpoint is written."

def _fit_killed_then_resumed(monkeypatch, ckpt, die_after, *args, **kw):
    "Fit with `checkpoint=ckpt`, stopped after epoch `die_after` is saved; then the same call again, resumed."
    import cellnb.train as T
    class Dies(T.CheckpointCallback):
        max_overhead = float('inf')   # save after every epoch, however short
        def after_epoch(self):
            super().after_epoch()
            if self.epoch == die_after: raise _Killed(f"killed after epoch {die_after}")
    with monkeypatch.context() as m:
        m.setattr(T, 'CheckpointCallback', Dies)
        with pytest.raises(_Killed): fit_cell_model(*args, checkpoint=ckpt, **kw)
    return fit_cell_model(*args, checkpoint=ckpt, **kw)

@pytest.mark.parametrize("protocol", ["ft_last", "full_ft"])
def test_fine_tuning_resumes_as_if_never_stopped(cells, tiny_backbone, tmp_path, monkeypatch, protocol):
    "ft_last (frozen parameters in the optimiser) and full_ft (two parameter groups), with early stopping: a run resumed after epoch 1 ends as the uninterrupted one."
    cs, tr, va = cells
    name, w = tiny_backbone
    kw = dict(weights=w, epochs=5, bs=16, lr=3e-3, device='cpu', progress=False, patience=2, seed=3)
    ref = fit_cell_model(protocol, name, tr, va, **kw)
    res = _fit_killed_then_resumed(monkeypatch, tmp_path/'ck.pth', 1, protocol, name, tr, va, **kw)
    assert res.config['resumed_at_epoch'] == 2
    pd_eq = lambda a, b: a.drop(columns='time', errors='ignore').equals(b.drop(columns='time', errors='ignore'))
    assert pd_eq(res.history, ref.history) and res.best_epoch == ref.best_epoch
    assert np.array_equal(res.predict_proba(va), ref.predict_proba(va))

def test_checkpoint_is_read_on_the_cpu_and_checked(cells, tmp_path, monkeypatch):
    "Whatever device trained it, a checkpoint is read to the CPU (RNG states must be CPU tensors); a file lacking a part is refused in one line."
    from cellnb.train import read_checkpoint
    cs, tr, va = cells
    ck = tmp_path/'ck.pth'
    fit_cell_model('scratch', 'cnn', tr, va, epochs=2, bs=16, device='cpu', progress=False, checkpoint=ck, **TINY)
    st = read_checkpoint(ck)
    assert st['epoch'] == 1 and st['key']['device'] == 'cpu' and 'cuda' not in st['rng']   # a CPU run never touches CUDA
    assert all(t.device.type == 'cpu' for t in [st['rng']['torch'], st['smooth_loss'][1], *st['model'].values()])
    del st['rng']; torch.save(st, ck)
    with pytest.raises(CellnbError, match="is not a cellnb training checkpoint"): read_checkpoint(ck)
    (tmp_path/'.ck.pth.123.tmp').write_bytes(b'half a save')   # a save cut short by a kill is swept away by the next fit
    ck.unlink(); fit_cell_model('scratch', 'cnn', tr, va, epochs=1, bs=16, device='cpu', progress=False, checkpoint=ck, **TINY)
    assert not list(tmp_path.glob('.ck.pth.*.tmp'))

def test_checkpoint_never_records_more_seconds_than_the_fit(cells, tmp_path, monkeypatch):
    "A slow save (here: copying the RNG state takes 0.3 s) is left out of both figures alike: the fit's train_seconds is at least its last checkpoint's."
    import time, cellnb.train as T
    cs, tr, va = cells
    rng_state = T._rng_state
    monkeypatch.setattr(T, '_rng_state', lambda dls: (time.sleep(.3), rng_state(dls))[1])
    ck = tmp_path/'ck.pth'
    res = fit_cell_model('scratch', 'cnn', tr, va, epochs=1, bs=16, device='cpu', progress=False, checkpoint=ck, **TINY)
    assert res.train_seconds >= T.read_checkpoint(ck)['seconds'] > 0   # before the fix: short by about the 0.3 s

@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_scratch_cuda_resumes(cells, tmp_path, monkeypatch):
    "On the GPU (bf16) a killed run resumes from its checkpoint, with the GPU's random stream restored."
    cs, tr, va = cells
    kw = dict(epochs=3, bs=8, lr=1e-2, device='cuda', progress=False, **TINY)
    res = _fit_killed_then_resumed(monkeypatch, tmp_path/'ck.pth', 0, 'scratch', 'cnn', tr, va, **kw)
    assert res.config['resumed_at_epoch'] == 1 and len(res.history) == 3 and acc(res, va) > 0.4

def test_importing_the_training_module_shows_no_fastai_deprecation_chatter():
    "fastai calls torch.jit.script at import, which recent torch answers with a deprecation notice; cellnb hides that one only."
    import subprocess, sys
    r = subprocess.run([sys.executable, "-W", "always", "-c", "import cellnb.train"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "torch.jit.script" not in r.stderr, r.stderr

# torch 2.14 (here) raises torch.jit.script's notice as a FutureWarning, torch 2.11 (the GPU image) as a DeprecationWarning
_REPLAY = """
import warnings, torch
real, calls = torch.jit.script, []
def script(*a, **k):
    calls.append(1)
    warnings.warn("`torch.jit.script` is deprecated. Please switch to `torch.compile` or `torch.export`.", {cat}, stacklevel=2)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore'); return real(*a, **k)
torch.jit.script = script
import cellnb.train
warnings.warn("cellnb hides that notice only", UserWarning)
print(len(calls))
"""

@pytest.mark.parametrize("category", ["FutureWarning", "DeprecationWarning"])
def test_fastais_torch_jit_script_notice_is_hidden_whatever_its_category(category):
    import subprocess, sys
    r = subprocess.run([sys.executable, "-W", "always", "-c", _REPLAY.format(cat=category)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert int(r.stdout.split()[-1]) > 0, "fastai no longer calls torch.jit.script at import: the test replays nothing"
    assert "torch.jit.script" not in r.stderr, r.stderr
    assert "cellnb hides that notice only" in r.stderr, r.stderr
