"A run whose weights blow up is stopped with one clear line, even when only the last step of an epoch diverges."
import pytest
from cellnb.core import CellnbError
from cellnb.synthetic import synthetic_ihc
from cellnb.data import group_split
from cellnb.train import fit_cell_model

def test_huge_lr_stops_with_a_clear_message():
    cs = synthetic_ihc(12, seed=0, n_specimens=6)
    tr, va, _ = group_split(cs, valid=0.2, test=0.2, seed=0)
    with pytest.raises(CellnbError, match="diverged.*lower lr"):
        fit_cell_model("scratch", "cnn", tr, va, epochs=2, lr=1e30, bs=16, device="cpu", progress=False)
