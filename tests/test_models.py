import pytest, torch
from cellnb.core import CellnbError
from cellnb.models import ARCHS, create_model, MODEL_REGISTRY, IMAGENET_MEAN, IMAGENET_STD

X = torch.randn(2, 3, 40, 40)

def test_archs_listed():
    assert ARCHS == ['cnn', 'nin', 'resnet', 'se_resnet', 'efficientnet', 'convnext', 'vit', 'custom_vit']
    assert all(a in MODEL_REGISTRY for a in ARCHS)

@pytest.mark.parametrize('arch', ARCHS)
def test_forward_and_features(arch):
    torch.manual_seed(0)
    m = create_model(arch, 3).eval()
    assert (m.input_size, tuple(m.mean), tuple(m.std)) == (40, IMAGENET_MEAN, IMAGENET_STD)
    with torch.no_grad():
        y = m(X)
        feats = m.forward_head(m.forward_features(X), pre_logits=True)
    assert y.shape == (2, 3) and torch.isfinite(y).all()
    assert feats.shape == (2, m.num_features)
    f = create_model(arch, 0).eval()
    with torch.no_grad(): z = f(X)
    assert z.shape == (2, f.num_features) and f.num_classes == 0

@pytest.mark.parametrize('arch', ARCHS)
def test_backward(arch):
    m = create_model(arch, 4).train()
    loss = torch.nn.functional.cross_entropy(m(X), torch.tensor([0, 3]))
    loss.backward()
    assert all(p.grad is not None for p in m.parameters() if p.requires_grad)

def test_timm_prefix():
    m = create_model('timm:resnet18', 5).eval()
    with torch.no_grad(): assert m(X).shape == (2, 5)
    assert m.input_size == 40
    f = create_model('timm:resnet18', 0).eval()
    with torch.no_grad(): assert f(X).shape == (2, 512)

def test_timm_fixed_size_resized():
    m = create_model('timm:vit_tiny_patch16_224', 2, img_size=224, depth=1).eval()
    assert m.input_size == 224
    with torch.no_grad(): assert m(X).shape == (2, 2)
    assert create_model('timm:vit_tiny_patch16_224', 2, depth=1).input_size == 40

def test_errors():
    with pytest.raises(CellnbError, match="custom_vit.*timm:<arch>"): create_model('vgg16', 4)
    with pytest.raises(CellnbError, match="timm has no model"): create_model('timm:nope_net', 4)
    for bad in (-1, 2.5, '4', True, None):
        with pytest.raises(CellnbError, match="n_classes"): create_model('cnn', bad)
    with pytest.raises(CellnbError, match="unknown option"): create_model('resnet', 4, widht=3)
    with pytest.raises(CellnbError, match="foundation"): create_model('timm:resnet18', 4, pretrained=True)

def test_overrides():
    m = create_model('custom_vit', 4, depth=2, dim=96, num_heads=2)
    assert len(m.blocks) == 2 and m.num_features == 96
    with torch.no_grad(): assert m.eval()(X).shape == (2, 4)
