"Tests for the synthetic CD103/CD8 double-IHC generator (cellnb.synthetic)."
import numpy as np
import pytest
import torch
from cellnb.core import CellnbError
from cellnb.data import CellSet
from cellnb.synthetic import synthetic_ihc, SYNTHETIC_CLASSES, STAIN_OD

def test_shapes_dtypes_classes_groups():
    cs = synthetic_ihc(8, seed=0, n_specimens=5)
    assert isinstance(cs, CellSet)
    assert cs.images.shape == (32, 3, 80, 80) and cs.images.dtype == torch.uint8
    assert cs.labels.dtype == torch.int64 and cs.labels.shape == (32,)
    assert cs.classes == SYNTHETIC_CLASSES and cs.classes is not SYNTHETIC_CLASSES
    assert cs.class_counts().tolist() == [8, 8, 8, 8]
    assert set(cs.groups) <= {f"syn0-s{k:02d}" for k in range(5)} and len(set(cs.groups)) >= 2
    assert cs.source_mpp == 0.25 and len(cs.meta) == 32
    for col in ('source', 'x', 'y', 'group', 'label', 'padded', 'note', 'cd8_level', 'cd103_level'):
        assert col in cs.meta
    assert (cs.meta.label == np.asarray(SYNTHETIC_CLASSES)[cs.labels.numpy()]).all()

def test_groups_count_default():
    cs = synthetic_ihc(100, seed=0)
    assert len(set(cs.groups)) == 20                    # 400 cells cover all 20 specimens

def test_deterministic():
    a, b = synthetic_ihc(10, seed=7), synthetic_ihc(10, seed=7)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert (a.groups == b.groups).all() and a.fingerprint() == b.fingerprint()
    c = synthetic_ihc(10, seed=8)
    assert not torch.equal(a.images, c.images)
    assert not set(a.groups) & set(c.groups)           # seeds never share a specimen name

def test_threads_restored():
    n = torch.get_num_threads()
    synthetic_ihc(2)
    assert torch.get_num_threads() == n

def test_sizes():
    assert synthetic_ihc(2, size=40).images.shape == (8, 3, 40, 40)
    cs = synthetic_ihc(2, size=64, out_size=40)
    assert cs.images.shape == (8, 3, 40, 40) and cs.source_mpp == 0.5
    assert cs.meta.x.between(0, 40).all()

def test_levels_follow_labels():
    cs = synthetic_ihc(50, seed=1, difficulty=0.5)
    cd8 = cs.meta.label.str.endswith('CD8+').values; cd103 = cs.meta.label.str.startswith('CD103+').values
    assert cs.meta.cd8_level[cd8].min() > cs.meta.cd8_level[~cd8].mean()
    assert cs.meta.cd103_level[cd103].min() > cs.meta.cd103_level[~cd103].mean()

def _dab_brown(cs):
    "Mean optical density of the blue channel minus green around the centre: a crude brown (DAB) score."
    od = -torch.log((cs.images.float() + 1) / 256)
    c = cs.size // 2
    return (od[:, 2, c - 25:c + 25, c - 25:c + 25] - 0.7 * od[:, 1, c - 25:c + 25, c - 25:c + 25]).mean((1, 2)).numpy()

def test_difficulty_monotonic():
    "A one-feature CD8 classifier (brown score) gets worse as difficulty rises."
    from sklearn.metrics import roc_auc_score
    aucs = []
    for d in (0.0, 1.0):
        cs = synthetic_ihc(60, seed=2, difficulty=d)
        aucs.append(roc_auc_score(cs.meta.label.str.endswith('CD8+'), _dab_brown(cs)))
    assert aucs[0] > aucs[1] + 0.05, aucs
    assert synthetic_ihc(40, seed=2, difficulty=1).meta.cd8_level.pipe(lambda s: ((s > 0) & (s < 0.2)).mean()) > \
           synthetic_ihc(40, seed=2, difficulty=0).meta.cd8_level.pipe(lambda s: ((s > 0) & (s < 0.2)).mean())

@pytest.mark.parametrize('kw, msg', [(dict(n_per_class=0), 'n_per_class'), (dict(n_per_class=-3), 'n_per_class'),
                                     (dict(n_per_class=2.5), 'n_per_class'), (dict(n_per_class=2, size=39), 'size=39'),
                                     (dict(n_per_class=2, out_size=32), 'out_size=32'),
                                     (dict(n_per_class=2, difficulty=1.5), 'difficulty'),
                                     (dict(n_per_class=2, n_specimens=0), 'n_specimens')])
def test_bad_input(kw, msg):
    with pytest.raises(CellnbError, match=msg) as e: synthetic_ihc(**kw)
    assert '\n' not in str(e.value)

def test_stain_vectors_unit():
    for v in STAIN_OD.values(): assert abs(np.linalg.norm(v) - 1) < 2e-3
