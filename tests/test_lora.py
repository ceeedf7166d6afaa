"""The lora protocol: peft adapters on a frozen backbone. Only adapters and head train; a run saves only them plus the
backbone weights' hash and loads back bit-identically; a bad target is refused in one line before a study starts; the
merged model computes what the adapted one does."""
import json, os, sys, subprocess
from pathlib import Path
import numpy as np, pandas as pd, pytest, torch
from cellnb.core import CellnbError
from cellnb.data import CellSet
from cellnb import train as T
from cellnb.train import fit_cell_model, FittedModel, merged_model, BackboneClassifier, LORA_FILE
from cellnb.foundation import load_backbone, lora_targets, lora_options, add_lora, LORA_TARGETS
from cellnb.sweep import StudyConfig, expand, run_study

BIN = Path(sys.executable).parent
NAME = 'timm:test_efficientnet'

def sh(*args, timeout=600):
    return subprocess.run([str(BIN/args[0]), *map(str, args[1:])], capture_output=True, text=True, timeout=timeout)

def easy_cells(n_per_class=12, size=48, n_classes=4, seed=0):
    "Noisy tiles, one colour per class."
    g = np.random.default_rng(seed)
    cols = np.array([[210, 40, 40], [40, 210, 40], [40, 40, 210], [210, 210, 40]])[:n_classes]
    ims = [(cols[c] + g.normal(0, 25, (size, size, 3))).clip(0, 255).astype(np.uint8) for c in range(n_classes) for _ in range(n_per_class)]
    return CellSet(np.stack(ims), [c for c in range(n_classes) for _ in range(n_per_class)], [f"c{k}" for k in range(n_classes)])

def tiny_weights(path, seed):
    "timm's test_efficientnet (a few thousand parameters) with random weights in a local file: a stand-in backbone."
    import timm
    from safetensors.torch import save_file
    torch.manual_seed(seed)
    save_file(timm.create_model('test_efficientnet', num_classes=0).state_dict(), str(path))
    return str(path)

@pytest.fixture(scope='module')
def run(tmp_path_factory):
    "One lora run on the tiny backbone (1 epoch), with the network's state captured just before training."
    d = tmp_path_factory.mktemp('lora')
    os.environ['CELLNB_CACHE_DIR'] = str(d/'cache')
    w = tiny_weights(d/'model.safetensors', 0)
    cs = easy_cells(); idx = np.arange(len(cs))
    tr, va = cs[idx[idx % 3 != 0]], cs[idx[idx % 3 == 0]]
    before, real = {}, T._fit_learner
    def spy(model, *a, **k):
        before.update({k_: v.detach().clone() for k_, v in model.state_dict().items()})
        return real(model, *a, **k)
    T._fit_learner = spy
    try: fm = fit_cell_model('lora', NAME, tr, va, weights=w, epochs=1, bs=16, lr=3e-3, device='cpu', progress=False, rank=4)
    finally: T._fit_learner = real
    return dict(fm=fm, before=before, w=w, tr=tr, va=va, dir=d)

def test_only_adapters_and_head_change(run):
    fm, before = run['fm'], run['before']
    after = fm.model.state_dict()
    assert set(after) == set(before)
    changed = {k for k in after if not torch.equal(before[k], after[k])}
    trained = set(T._lora_keys(fm.model))
    assert changed and changed <= trained                     # backbone weights AND BatchNorm statistics unchanged
    assert any('.lora_B.' in k for k in changed) and any(k.startswith('head.') for k in changed)
    grads = {n for n, p in fm.model.named_parameters() if p.requires_grad}
    assert grads == trained   # what trains is what is saved
    # the frozen backbone is the loaded one, tensor for tensor
    ref = load_backbone(NAME, run['w']).state_dict()
    base = {k.removeprefix('backbone.base_model.model.').replace('.base_layer.', '.'): v for k, v in after.items()
            if k.startswith('backbone.') and '.lora_' not in k}
    assert set(base) == set(ref) and all(torch.equal(base[k], ref[k]) for k in ref)
    n = sum(p.numel() for p in fm.model.parameters() if p.requires_grad)
    assert fm.config['trainable_params'] == n and 0 < n < sum(p.numel() for p in fm.model.parameters()) / 2
    assert fm.config['lora'] == dict(rank=4, alpha=16.0, dropout=0.05, target_modules=LORA_TARGETS['EfficientNet'])

def test_save_load_predict_is_bit_identical(run, tmp_path):
    fm, va = run['fm'], run['va']
    d = fm.save(tmp_path/'model')
    assert sorted(p.name for p in d.iterdir()) == sorted(['config.json', 'history.csv', LORA_FILE])   # no model.pt: no backbone copy
    saved = torch.load(d/LORA_FILE, weights_only=True)
    assert set(saved) == set(T._lora_keys(fm.model))
    cfg = json.loads((d/'config.json').read_text())
    assert cfg['weights_hash'] == load_backbone(NAME, run['w']).weights_hash and cfg['protocol'] == 'lora'
    fm2 = FittedModel.load(d, device='cpu')
    for cond, s in [('clean', 0.0), ('pre', 1.2)]:
        assert np.array_equal(fm.predict_proba(va, cond, s), fm2.predict_proba(va, cond, s))
    assert fm2.config['trainable_params'] == fm.config['trainable_params'] and fm2.config['lora'] == fm.config['lora']

def test_other_backbone_weights_refused_in_one_line(run, tmp_path):
    d = run['fm'].save(tmp_path/'model')
    other = tiny_weights(tmp_path/'other.safetensors', 1)
    with pytest.raises(CellnbError, match=r"trained on timm:test_efficientnet weights with SHA-1 .* adapters fit only") as e:
        FittedModel.load(d, device='cpu', weights=other)
    assert '\n' not in str(e.value)

def test_cellnb_predict_roundtrip_and_hash_check(run, tmp_path):
    from PIL import Image
    fm, va = run['fm'], run['va']
    d = fm.save(tmp_path/'run'/'model')
    (tmp_path/'cells').mkdir()
    for i, im in enumerate(va.images.permute(0, 2, 3, 1).numpy()): Image.fromarray(im).save(tmp_path/'cells'/f"cell_{i:03d}.png")
    r = sh('cellnb-predict', '--model', tmp_path/'run', '--data', f"folder:{tmp_path/'cells'}", '--crop', 48, '--device', 'cpu', '--out', tmp_path/'p.csv')
    assert r.returncode == 0, r.stderr
    df = pd.read_csv(tmp_path/'p.csv')
    order = np.argsort([Path(s).name for s in df.source])   # the CSV's rows in file-name order, i.e. va's order
    p = fm.predict_proba(va)
    assert np.allclose(df[[f"prob_{c}" for c in fm.classes]].to_numpy()[order], p, rtol=0, atol=1e-7)
    other = tiny_weights(tmp_path/'other.safetensors', 1)
    r = sh('cellnb-predict', '--model', d, '--data', f"folder:{tmp_path/'cells'}", '--crop', 48, '--weights', other, '--out', tmp_path/'q.csv')
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and 'SHA-1' in r.stderr and not (tmp_path/'q.csv').exists()

def test_merged_model_matches_unmerged(run):
    fm = run['fm']
    m = merged_model(fm)
    assert not any('lora_' in k for k in m.state_dict())
    plain = BackboneClassifier(load_backbone(NAME, run['w']), len(fm.classes))
    assert set(m.state_dict()) == set(plain.state_dict())   # a plain backbone and head: costs what the backbone costs
    x = torch.rand(4, 3, 64, 64)
    with torch.no_grad(): a, b = fm.model.eval()(x), m(x)
    assert torch.allclose(a, b, atol=1e-5) and not torch.equal(b, plain.eval()(x))
    with pytest.raises(CellnbError, match='merged_model is for lora runs'):
        merged_model(FittedModel('scratch', 'cnn', ['a', 'b'], 40, model=torch.nn.Linear(2, 2)))

def test_bad_target_refused_before_training(run, tmp_path):
    tr, va = run['tr'], run['va']
    # the target is checked on the architecture before any weights are read (this weights file does not exist)
    with pytest.raises(CellnbError, match=r"target_modules=\['qkv', 'proj'\] names no layer of backbone 'timm:test_efficientnet'") as e:
        fit_cell_model('lora', NAME, tr, va, weights=tmp_path/'none.pth', target_modules=['qkv', 'proj'])
    assert '\n' not in str(e.value)
    with pytest.raises(CellnbError, match='cannot adapt'): fit_cell_model('lora', NAME, tr, va, target_modules=r'blocks\.0\.0\.bn1')
    with pytest.raises(CellnbError, match='lora rank=0 is invalid'): fit_cell_model('lora', NAME, tr, va, rank=0)
    with pytest.raises(CellnbError, match="which protocol 'lora' does not take"): fit_cell_model('lora', NAME, tr, va, Cs=[1.0])

def _study(tmp_path, w, **kw):
    d = dict(models=[], backbones=[NAME], protocols=['lora'], weights={NAME: w}, flag_limits=[8], seeds=[0],
             n_per_class=12, blur_sigmas=[1.0], blur_placements=['pre'], epochs=1, n_boot=10)
    return {**d, **kw}

def test_study_refuses_bad_lora_config_before_it_starts(run, tmp_path):
    w, out = run['w'], tmp_path/'out'
    bad = _study(tmp_path, w, lora=dict(target_modules=['qkv', 'proj']))
    with pytest.raises(CellnbError, match=r"lora: lora target_modules=\['qkv', 'proj'\] names no layer") as e:
        run_study(bad, out, progress=False)
    assert '\n' not in str(e.value) and not out.exists()
    import yaml
    (tmp_path/'s.yaml').write_text(yaml.safe_dump(bad))
    r = sh('cellnb-study', '--config', tmp_path/'s.yaml', '--out', out, timeout=300)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and 'names no layer' in r.stderr, r.stderr
    assert not out.exists()
    for lora, msg in [(dict(rank=0), 'lora rank=0 is invalid'), (dict(rnak=4), "unknown option 'rnak'"), (dict(dropout=1.0), 'dropout=1.0 is invalid')]:
        with pytest.raises(CellnbError, match=msg): StudyConfig.from_dict(_study(tmp_path, w, lora=lora))
    with pytest.raises(CellnbError, match='protocols has no lora'): StudyConfig.from_dict(_study(tmp_path, w, protocols=['linear_probe'], lora=dict(rank=4)))

def test_study_grid_carries_lora_options(run, tmp_path):
    w = run['w']
    runs = expand(_study(tmp_path, w, protocols=['linear_probe', 'lora'], lora=dict(rank=4)))
    lo = [r for r in runs if r['protocol'] == 'lora']
    assert len(lo) == 1 and lo[0]['lora'] == lora_options(rank=4) and all('lora' not in r for r in runs if r['protocol'] != 'lora')
    # a probe's run id does not depend on whether lora runs beside it
    probe = lambda rs: [r['run_id'] for r in rs if r['protocol'] == 'linear_probe']
    assert probe(runs) == probe(expand(_study(tmp_path, w, protocols=['linear_probe'])))

def test_default_targets_of_the_study_backbones(no_network):
    "Defaults per family, on the architectures alone: pointwise convolutions (EfficientNet-Lite0, ResNet-RS50), attention projections (CTransPath, UNI); peft adapts them with the network off."
    eff = lora_targets('effnet_lite0_in1k')
    assert len(eff) == 31 and all(n.rsplit('.', 1)[-1] in ('conv_pw', 'conv_pwl') for n in eff)
    rs = lora_targets('resnetrs50')
    assert len(rs) == 32 and rs[0] == 'layer1.0.conv1' and rs[-1] == 'layer4.2.conv3'
    assert lora_targets('ctranspath')[:2] == ['layers.0.blocks.0.attn.qkv', 'layers.0.blocks.0.attn.proj']
    assert len(lora_targets('uni')) == 48
    # peft adapts exactly the layers named (the real EfficientNet-Lite0 weights)
    m = add_lora(load_backbone('effnet_lite0_in1k'))
    wrapped = sorted(n.removeprefix('base_model.model.') for n, mod in m.named_modules() if hasattr(mod, 'lora_A') and hasattr(mod, 'base_layer'))
    assert wrapped == sorted(eff)
    with pytest.raises(CellnbError, match='no default LoRA target'): lora_targets(torch.nn.Sequential(torch.nn.Linear(2, 2)))
