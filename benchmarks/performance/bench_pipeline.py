"""P1: one training epoch of data loading + augmentation, cellnb's in-memory loader vs fastai ImageDataLoaders.from_folder.

Both loaders see the same cells (cellnb: one uint8 tensor; fastai: the same crops written as PNG files in a temporary
folder), the same batch size and comparable augmentation (flips + 90-degree rotations, brightness/contrast jitter,
resize to 40 px, ImageNet normalisation). We time one full pass over the training loader (loading only), then one
epoch of training a small CNN (the model step included). Prints the loading-only ratio last and writes
benchmarks/results/bench_pipeline.json.

Usage: python benchmarks/performance/bench_pipeline.py [--cells 2048] [--bs 128] [--device cpu|cuda] [--workers N]
"""
import argparse, json, os, platform, shutil, sys, tempfile, time
from datetime import date
from pathlib import Path
import numpy as np
import torch

def get_cells(n:int, seed:int=0):
    "CRCHisto crops (64 px) when the data is here, else the synthetic set; n cells, all classes."
    from cellnb.core import crchisto_path
    if crchisto_path() is not None:
        from cellnb.datasets import load_crchisto
        cs, name = load_crchisto(crop=64), 'crchisto (64 px crops)'
    else:
        from cellnb.synthetic import synthetic_ihc
        cs, name = synthetic_ihc(n // 4 + 1, seed=seed), 'synthetic (80 px)'
    idx = np.random.default_rng(seed).permutation(len(cs))[:n]
    return cs[np.sort(idx)], name

def write_pngs(cs, root:Path, n_valid:int):
    "Write cells as PNG in fastai's folder layout: root/{train,valid}/<class>/<i>.png."
    from PIL import Image
    ims = cs.images.permute(0, 2, 3, 1).numpy()
    for i in range(len(cs)):
        split = 'valid' if i < n_valid else 'train'
        d = root/split/cs.classes[int(cs.labels[i])]; d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(ims[i]).save(d/f"{i}.png")

def time_pass(dl, repeats:int=2) -> float:
    "Seconds for one full pass over a loader (best of `repeats`, after a warm-up batch), synchronising CUDA."
    it = iter(dl); next(it); del it
    best = float('inf')
    for _ in range(repeats):
        t = time.perf_counter()
        for xb, yb in dl: pass
        if torch.cuda.is_available(): torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return best

def small_cnn(n_classes:int):
    "The small CNN used for the model step (cellnb's 'cnn' when available)."
    try:
        from cellnb.models import create_model
        return create_model('cnn', n_classes)
    except Exception:
        from torch import nn
        return nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                             nn.Flatten(), nn.Linear(64, n_classes))

def time_fit(dls, n_classes:int) -> float:
    "Seconds for one training epoch (train + valid) of a small CNN on `dls`."
    from fastai.learner import Learner
    from fastai.losses import CrossEntropyLossFlat
    torch.manual_seed(0)
    learn = Learner(dls, small_cnn(n_classes), loss_func=CrossEntropyLossFlat())
    with learn.no_bar(), learn.no_logging():
        t = time.perf_counter(); learn.fit(1, 1e-3)   # one epoch as a user runs it (fastai restarts its workers each epoch)
        if torch.cuda.is_available(): torch.cuda.synchronize()
        return time.perf_counter() - t

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--cells', type=int, default=2048, help='cells in the training set (plus 10%% for valid)')
    ap.add_argument('--bs', type=int, default=128)
    ap.add_argument('--device', default=None)
    ap.add_argument('--workers', type=int, default=None, help='fastai loader workers (default: fastai default = CPU count)')
    ap.add_argument('--out', default=str(Path(__file__).resolve().parents[1]/'results'/'bench_pipeline.json'))
    a = ap.parse_args(argv)
    from fastai.vision.all import ImageDataLoaders, Resize, aug_transforms, Normalize, imagenet_stats, defaults
    from cellnb.core import get_device
    from cellnb.train import cell_dataloaders
    device = get_device(a.device)
    n_valid = max(a.cells // 10, a.bs)
    cs, data_name = get_cells(a.cells + n_valid)
    valid, train = cs[np.arange(n_valid)], cs[np.arange(n_valid, len(cs))]
    workers = defaults.cpus if a.workers is None else a.workers
    tmp = Path(tempfile.mkdtemp(prefix='cellnb-bench-'))
    try:
        t = time.perf_counter(); write_pngs(cs, tmp, n_valid); t_write = time.perf_counter() - t
        # fastai: PNG files, PIL decode + Resize(40) per item, batch augmentation on the device
        fdls = ImageDataLoaders.from_folder(
            tmp, train='train', valid='valid', bs=a.bs, num_workers=workers, device=device, item_tfms=Resize(40),
            batch_tfms=[*aug_transforms(do_flip=True, flip_vert=True, max_rotate=0., max_zoom=1., max_lighting=0.1,
                                        max_warp=0., p_lighting=1.0), Normalize.from_stats(*imagenet_stats)])
        # cellnb: one uint8 tensor, per-batch resize S->40 + flips/rot90 + brightness/contrast/HED jitter on the device
        cdls = cell_dataloaders(train, valid, bs=a.bs, augment=True, device=device, seed=0)
        assert len(fdls.train_ds) == len(train)
        fx, _ = fdls.train.one_batch(); cx, _ = cdls.train.one_batch()
        assert tuple(fx.shape[1:]) == tuple(cx.shape[1:]) == (3, 40, 40), (fx.shape, cx.shape)
        print(f"{len(train)} train / {len(valid)} valid cells of {data_name}, bs {a.bs}, device {device}, fastai workers {workers}")
        t_fastai = time_pass(fdls.train); print(f"fastai from_folder, loading+augment epoch: {t_fastai:.3f} s")
        t_cellnb = time_pass(cdls.train); print(f"cellnb in-memory,   loading+augment epoch: {t_cellnb:.3f} s")
        # the first epoch also computes the deterministic part (to float, resize to 40) once for all cells
        fresh = cdls.train.new(); t = time.perf_counter()
        for xb, yb in fresh: pass
        if device.type == 'cuda': torch.cuda.synchronize()
        t_first = time.perf_counter() - t; print(f"cellnb in-memory,   first epoch (incl. the one-off resize of all cells): {t_first:.3f} s")
        f_fastai = time_fit(fdls, len(cs.classes)); print(f"fastai from_folder, training epoch (small CNN): {f_fastai:.3f} s")
        f_cellnb = time_fit(cdls, len(cs.classes)); print(f"cellnb in-memory,   training epoch (small CNN): {f_cellnb:.3f} s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ratio, ratio_fit = t_fastai / t_cellnb, f_fastai / f_cellnb
    res = dict(ratio=round(ratio, 2), target=20, ratio_with_model=round(ratio_fit, 2),
               ratio_first_epoch=round(t_fastai / t_first, 2), cellnb_first_epoch_s=round(t_first, 4),
               fastai_epoch_s=round(t_fastai, 4), cellnb_epoch_s=round(t_cellnb, 4),
               fastai_train_epoch_s=round(f_fastai, 4), cellnb_train_epoch_s=round(f_cellnb, 4),
               png_write_s=round(t_write, 2), n_train=len(train), n_valid=len(valid), bs=a.bs, data=data_name,
               src_size=cs.size, device=str(device), fastai_workers=workers, cpu_count=os.cpu_count(),
               gpu=(torch.cuda.get_device_name(0) if torch.cuda.is_available() else None), platform=platform.platform(),
               torch=torch.__version__, date=str(date.today()),
               command='python benchmarks/performance/bench_pipeline.py ' + ' '.join(sys.argv[1:] if argv is None else argv))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1) + '\n')
    print(f"first cellnb epoch (one-off resize included): {t_fastai / t_first:.1f}x; with the model step: {ratio_fit:.1f}x")
    print(f"loading-only epoch ratio (fastai / cellnb): {ratio:.1f}x (target >= 20x)")
    return res

if __name__ == '__main__':
    main()
