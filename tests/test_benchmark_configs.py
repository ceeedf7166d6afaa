"""The benchmark configs: each CV config passes the entry checks (--dry-run trains nothing), a bad entry is refused in one
line before anything trains, and the GPU FlagLimit grid is a valid study config over all eight architectures."""
import json, subprocess, sys
from pathlib import Path
import numpy as np, pytest
from cellnb.sweep import StudyConfig, expand
from cellnb.train import train_schedule
from cellnb.models import ARCHS

ROOT = Path(__file__).resolve().parent.parent
CV = ROOT / "benchmarks" / "crchisto_study" / "crchisto_cv.py"
# what a FlagLimit side study shares with crchisto_flaglimit.yaml, so its rows compare with the study's
STUDY_POLICY = ("crop", "epochs", "min_steps", "batch_size", "blur_sigmas", "blur_placements", "split_seed", "n_boot")

def _cfg(name):
    "A study or ablation config of benchmarks/ by file name."
    found = [p for d in ("crchisto_study", "ablations") if (p := ROOT / "benchmarks" / d / name).exists()]
    assert len(found) == 1, f"{name}: {found}"
    return found[0]

def _dry(cfg):
    return subprocess.run([sys.executable, str(CV), "--config", str(cfg), "--dry-run"], capture_output=True, text=True, timeout=300)

@pytest.fixture(scope="module")
def gpu_dry(): return _dry(_cfg("crchisto_cv_gpu.yaml"))

@pytest.mark.parametrize("name", ["crchisto_cv.yaml", "crchisto_cv_gpu.yaml"])
def test_cv_configs_pass_their_checks(name, gpu_dry):
    r = gpu_dry if name == "crchisto_cv_gpu.yaml" else _dry(_cfg(name))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "config OK" in r.stdout

def test_cv_gpu_config_covers_the_issue_grid(gpu_dry):
    r = gpu_dry
    rows = [l.split() for l in r.stdout.splitlines() if l.split() and "/" in l.split()[0]]
    assert {row[0].split("/")[0] for row in rows if row[1] == "scratch"} == set(ARCHS)
    assert {row[1] for row in rows} == {"scratch", "linear_probe", "ft_last", "full_ft"}
    assert all(row[5] == "all" for row in rows)   # every cell

@pytest.mark.parametrize("entry, says", [
    ("{name: cnnn, protocol: scratch}", "unknown model 'cnnn'; use one of cnn,"),
    ("{name: cnn, protocol: probe}", "unknown protocol 'probe'; use one of scratch,"),
    ("{name: cnn, protocol: scratch, epoch: 3}", "unknown keys ['epoch']"),
])
def test_cv_config_bad_entry_is_one_line(tmp_path, entry, says):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(f"crop: 48\nfolds: 2\nsplit_seed: 0\nseed: 0\nbatch_size: 64\nn_boot: 10\nmodels:\n  - {entry}\n")
    r = _dry(cfg)
    assert r.returncode != 0 and says in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]

def test_flaglimit_gpu_grid_is_a_valid_study():
    c = StudyConfig.from_yaml(_cfg("crchisto_flaglimit_gpu.yaml"))
    assert sorted(c.models) == sorted(ARCHS) and c.protocols == ["linear_probe", "ft_last", "full_ft"]
    assert c.flag_limits == [64, 128, 256, 512, 1024, 2048, 100000] and c.seeds == [0, 1, 2]

def test_cv_config_takes_a_timm_architecture(tmp_path):
    "The CV script checks names with cellnb.core.check_model, the same check as training: 'timm:<arch>' passes."
    cfg = tmp_path / "timm.yaml"
    cfg.write_text("crop: 48\nfolds: 2\nsplit_seed: 0\nseed: 0\nbatch_size: 64\nn_boot: 10\nmodels:\n  - {name: 'timm:resnet18', protocol: scratch}\n")
    r = _dry(cfg)
    assert r.returncode == 0 and "config OK" in r.stdout, r.stderr[-2000:]

def test_cpu_flaglimit_configs_cover_every_architecture():
    "The CPU phases of the FlagLimit study (CNN + probe, small-patch ViT, the six others) share one split and policy."
    cs = [StudyConfig.from_yaml(_cfg(f"crchisto_flaglimit{s}.yaml")) for s in ("", "_vit", "_archs")]
    assert sorted(m for c in cs for m in c.models) == sorted(ARCHS)
    assert sorted(p for c in cs if c.backbones for p in c.protocols) == ["linear_probe"]
    for c in cs[1:]:
        assert sorted(c.flag_limits) == sorted(cs[0].flag_limits) and c.seeds == cs[0].seeds
        assert (c.split_seed, c.crop, c.epochs, c.min_steps, c.batch_size, c.blur_sigmas) == \
               (cs[0].split_seed, cs[0].crop, cs[0].epochs, cs[0].min_steps, cs[0].batch_size, cs[0].blur_sigmas)

def test_balanced_flaglimit_configs_rerun_the_all_cells_runs_with_a_balanced_loss():
    "The class-mix check (finding e): the plain runs at all cells, parameter for parameter, but for class_weight."
    for s in ("", "_vit"):
        plain = StudyConfig.from_yaml(_cfg(f"crchisto_flaglimit{s}.yaml"))
        bal = StudyConfig.from_yaml(_cfg(f"crchisto_flaglimit_balanced{s}.yaml"))
        assert plain.class_weight is None and bal.class_weight == "balanced"
        top = max(plain.flag_limits)
        base = {(r["model"], r["protocol"], r["seed"]): r for r in expand(plain) if r["flag_limit"] == top}
        runs = expand(bal)
        assert len(runs) == len(base)
        for r in runs:
            p = base[(r["model"], r["protocol"], r["seed"])]
            assert {k: v for k, v in r.items() if k not in ("run_id", "class_weight")} == {k: v for k, v in p.items() if k != "run_id"}
            assert r["run_id"] != p["run_id"]

def test_slope_vs_accuracy_pairs_the_models_at_the_largest_flag_limit():
    "Finding (d)'s correlation: models paired at the largest FlagLimit; a model that stops short of it is left out."
    sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "benchmarks" / "crchisto_study")]
    from crchisto_flaglimit import _slope_vs_accuracy
    f1 = {"a": 0.70, "b": 0.65, "c": 0.60, "d": 0.55, "e": 0.50}
    table = {e: {"1024": {"macro_f1": 0.4}, "100000": {"macro_f1": v}} for e, v in f1.items()}
    table["short"] = {"1024": {"macro_f1": 0.9}}
    d = {e: {"pre": {"flag_limit": 100000, "slope_at_largest_flag_limit": -0.1 - 2 * (v - 0.5)}} for e, v in f1.items()}
    d["short"] = {"pre": {"flag_limit": 1024, "slope_at_largest_flag_limit": 0.0}}
    r = _slope_vs_accuracy(table, d)                      # 'short' has no 'all' run: left out
    assert "short" not in r["points"]
    assert r["flag_limit"] == 100000 and r["n_models"] == 5 and r["r"] == pytest.approx(-1.0)
    assert r["ci"][0] <= r["r"] <= r["ci"][1]
    assert _slope_vs_accuracy(table, dict(error="no blur rows")) is None

def test_shared_patch_flaglimit_configs_keep_the_study_policy():
    "The shared-patch re-runs (probe on every FlagLimit, ft_last and full_ft at 64) change nothing but what runs."
    base = StudyConfig.from_yaml(_cfg("crchisto_flaglimit.yaml"))
    new = [StudyConfig.from_yaml(_cfg(f"crchisto_flaglimit{s}_shared40.yaml")) for s in ("", "_ft", "_fullft")]
    assert [c.protocols for c in new] == [["linear_probe"], ["ft_last"], ["full_ft"]]
    assert all(c.models == [] and c.backbones == base.backbones and c.seeds == base.seeds for c in new)
    assert new[0].flag_limits == base.flag_limits and new[1].flag_limits == new[2].flag_limits == [64]
    for k in STUDY_POLICY:
        assert all(getattr(c, k) == getattr(base, k) for c in new), k

def test_shared_patch_ft_grid_and_balanced_configs_extend_the_grid_without_changing_the_policy():
    "ft_last at 128-512 and the balanced probe at all cells: only what runs differs from the study."
    base = StudyConfig.from_yaml(_cfg("crchisto_flaglimit.yaml"))
    grid, bal = (StudyConfig.from_yaml(_cfg(f"crchisto_flaglimit_{s}_shared40.yaml")) for s in ("ftgrid", "balanced"))
    old_bal = StudyConfig.from_yaml(_cfg("crchisto_flaglimit_balanced.yaml"))
    assert grid.protocols == ["ft_last"] and grid.flag_limits == [128, 256, 512] and grid.class_weight is None
    assert bal.protocols == old_bal.protocols and bal.flag_limits == old_bal.flag_limits and bal.class_weight == "balanced"
    for c in (grid, bal):
        assert c.models == [] and c.backbones == base.backbones and c.seeds == base.seeds
        for k in STUDY_POLICY:
            assert getattr(c, k) == getattr(base, k), k

def _extension_config(stem, protocols, fls, **changed):
    """The extension folder's config `crchisto_flaglimit_{stem}_shared40.yaml`, checked: these protocols and FlagLimits, the
    backbone only, the study's seeds and policy but for the fields in `changed` (name=value), which must hold those values."""
    base = StudyConfig.from_yaml(_cfg("crchisto_flaglimit.yaml"))
    c = StudyConfig.from_yaml(_cfg(f"crchisto_flaglimit_{stem}_shared40.yaml"))
    assert c.protocols == protocols and c.flag_limits == fls and c.class_weight is None
    assert c.models == [] and c.backbones == base.backbones and c.seeds == base.seeds
    for k in STUDY_POLICY:
        assert getattr(c, k) == changed.get(k, getattr(base, k)), k
    return c

# CRCHisto's training part at split_seed 0 holds 1,411 'others' cells (the ft2048 runs' n_train_per_class) and more than
# 2,048 of each other class: a FlagLimit above 1,411 caps 'others' only
OTHERS_TRAIN = json.loads((ROOT / "benchmarks" / "results" / "crchisto_flaglimit_shared40_ft2048.json").read_text()
                          )["table"]["effnet_lite0_in1k · ft_last"]["2048"]["n_train_per_class"]

# every training cell at split_seed 0 (epithelial, fibroblast, inflammatory, others), checked on the data below
ALL_TRAIN = (5523, 3975, 4785, 1411)

def _steps(run: dict) -> int:
    "Optimizer steps of one expanded run, by the runs' own policy, on CRCHisto's training cells (FlagLimits up to 2048, or every cell)."
    fl = run["flag_limit"]
    n = sum(ALL_TRAIN) if fl >= max(ALL_TRAIN) else 3 * fl + min(fl, OTHERS_TRAIN)
    assert fl <= 2048 or fl >= max(ALL_TRAIN), fl
    epochs, steps_per_epoch = train_schedule(n, run["batch_size"], run["epochs"], run.get("min_steps", 0))
    return epochs * steps_per_epoch

@pytest.mark.parametrize("name,fl", [("1024", 1024), ("2048", 2048), ("all", 100000)])
def test_ft_extension_configs_pair_ft_last_with_the_probe(name, fl):
    "ft_last and the probe at 1024, 2048 and every cell, each its own folder: both protocols, one FlagLimit, the study's policy."
    _extension_config(f"ft{name}", ["linear_probe", "ft_last"], [fl])

@pytest.mark.parametrize("name,fls", [("_grid", [128, 256]), ("512", [512])])
def test_fullft_configs_pair_full_ft_with_the_probe(name, fls):
    "full_ft and the probe at 128 and 256 and 512, each its own folder: both protocols, the study's policy."
    _extension_config(f"fullft{name}", ["linear_probe", "full_ft"], fls)

@pytest.mark.parametrize("name,fl,steps", [("1024", 1024, 256), ("2048", 2048, 476), ("all", 100000, 984)])
def test_fullft_config_runs_full_ft_alone_against_the_ft_folder(name, fl, steps):
    "full_ft at 1024, 2048 and on every cell: full_ft only, the study's policy; the probe and ft_last it is paired with come from the ft folder at the same FlagLimit, whose JSON keeps per-seed rows for both."
    c = _extension_config(f"fullft{name}", ["full_ft"], [fl])
    prior = json.loads((ROOT / "benchmarks" / "results" / f"crchisto_flaglimit_shared40_ft{name}.json").read_text())["table"]
    for p in ("ft_last", "linear_probe"):
        assert set(prior[f"effnet_lite0_in1k · {p}"][str(fl)]["seed_macro_f1"]) == {str(s) for s in c.seeds}, p
    assert {_steps(r) for r in expand(c)} == {steps}   # 4 epochs of 64 steps at 1024; at 2048 'others' is capped at 1,411: 4 of 119; all: 4 of 246
    assert OTHERS_TRAIN == 1411 == ALL_TRAIN[-1]

def test_crchisto_training_part_holds_the_counts_the_step_checks_use():
    "ALL_TRAIN is what group_split(seed 0) gives on the real data at the configs' 48-px cut."
    from cellnb.core import require_crchisto
    from cellnb.data import group_split
    from cellnb.datasets import load_crchisto
    train = group_split(load_crchisto(require_crchisto(), crop=48), seed=0)[0]
    assert tuple(np.bincount(train.labels.numpy(), minlength=4)) == ALL_TRAIN and train.classes == ["epithelial", "fibroblast", "inflammatory", "others"]

@pytest.mark.parametrize("stem,protocol,fl,short_yaml,more_yaml,short_steps,long_steps", [
    # full_ft at 512: the same seeds and cells as the fullft512 runs, the 256 steps of the fullft1024 runs
    pytest.param("fullft512long", "full_ft", 512, "fullft512", "fullft1024", 128, 256, id="fullft512long"),
    # ft_last at 512: the same seeds and cells as the curve's runs at 512, the 256 steps of the ft1024 runs
    pytest.param("ftlast512long", "ft_last", 512, "ftgrid", "ft1024", 128, 256, id="ftlast512long"),
    # full_ft at 256: the same seeds and cells as the fullft_grid runs at 256, the 128 steps of the fullft512 runs
    pytest.param("fullft256long", "full_ft", 256, "fullft_grid", "fullft512", 64, 128, id="fullft256long")])
def test_schedule_control_config_changes_only_the_epochs(stem, protocol, fl, short_yaml, more_yaml, short_steps, long_steps):
    "A schedule control reruns its short leg's runs with only the epochs changed (8, not 4): the step count of the runs with more cells."
    c = _extension_config(stem, [protocol], [fl], epochs=8)
    rows = lambda name: [r for r in expand(_cfg(f"crchisto_flaglimit_{name}_shared40.yaml")) if r["protocol"] == protocol]
    short = [r for r in rows(short_yaml) if r["flag_limit"] == fl]
    for a, b in zip(expand(c), short, strict=True):
        assert {k for k in a if a[k] != b[k]} == {"epochs", "run_id"} and (a["epochs"], b["epochs"]) == (8, 4)
    assert {_steps(r) for r in expand(c)} == {_steps(r) for r in rows(more_yaml)} == {long_steps} and {_steps(r) for r in short} == {short_steps}

def test_schedule_table_splits_a_step_into_steps_and_cells(tmp_path, monkeypatch):
    "tables.py's schedule control: more steps on the same cells plus more cells on the same steps add up to the curve's step, each paired by seed (arithmetic on hand-made JSONs)."
    sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "benchmarks" / "crchisto_study")]
    import tables
    cfg = lambda fl, ep: f"protocols: [full_ft]\nflag_limits: [{fl}]\nepochs: {ep}\nbatch_size: 64\nmin_steps: 60\n"
    def folder(x, fl, ep, seeds):
        row = dict(macro_f1=sum(seeds) / 3, seed_sd=.01, seed_macro_f1={str(i): v for i, v in enumerate(seeds)}, boot_ci=[0, 1],
                   weighted_f1=.7, accuracy=.7, n_seeds=3, train_seconds=1.0, n_train_per_class=fl)
        slope = dict(slope=-.4, seed_ci=[-.5, -.3], n_runs=3, flag_limit=fl)
        (tmp_path / f"crchisto_flaglimit_shared40_{x}.json").write_text(json.dumps(dict(
            configs=[cfg(fl, ep)], runs=3, runs_ok=3, train_seconds_total=60.0, table={"bb · full_ft": {str(fl): row}},
            d_blur_slopes={"bb · full_ft": {"pre": slope}})))
    folder("short", 512, 4, [.60, .61, .62]); folder("long", 512, 8, [.63, .65, .64]); folder("more", 1024, 4, [.67, .68, .69])
    monkeypatch.setattr(tables, "RESULTS", tmp_path)
    monkeypatch.setattr(tables, "_load", lambda n: json.loads((tmp_path / f"{n}.json").read_text()))
    monkeypatch.setattr(tables, "_against_scratch", lambda d: "")
    monkeypatch.setattr(tables, "SCHEDULE_CONTROLS", {"long": ("bb · full_ft", "crchisto_flaglimit_shared40_short", "crchisto_flaglimit_shared40_more")})
    out = tables.schedule_table("long")
    for line in ("| more steps, same cells | 512 cells, 128 steps: 0.610 | 512 cells, 256 steps: 0.640 | +0.030 [",
                 "| more cells, same steps | 512 cells, 256 steps: 0.640 | 1024 cells, 256 steps: 0.680 | +0.040 [",
                 "| both (the curve's step) | 512 cells, 128 steps: 0.610 | 1024 cells, 256 steps: 0.680 | +0.070 [+0.070, +0.070] | paired by seed | 0, 1, 2 |"):
        assert line in out, line
    assert "WARNING" not in out
    # a short leg from a study JSON: its row and its config at the control's FlagLimit, among others
    j = json.loads((tmp_path / "crchisto_flaglimit_shared40_short.json").read_text())
    j["configs"] = ["protocols: [linear_probe]\nflag_limits: [512]\nepochs: 2\nbatch_size: 64\n", "protocols: [full_ft]\nflag_limits: [256]\nepochs: 9\nbatch_size: 64\n", *j["configs"]]
    j["table"]["bb · full_ft"]["256"] = {**j["table"]["bb · full_ft"]["512"], "macro_f1": .5}
    (tmp_path / "crchisto_flaglimit_shared40_short.json").write_text(json.dumps(j))
    assert "| more steps, same cells | 512 cells, 128 steps: 0.610 | 512 cells, 256 steps: 0.640 | +0.030 [" in tables.schedule_table("long")
    folder("more", 1024, 8, [.67, .68, .69])   # 512 steps: the cells part is no longer at equal steps, and the table says so
    assert "WARNING: 256 against 512 steps" in tables.schedule_table("long")

def test_protocol_gains_pairs_protocols_by_seed():
    "Finding (f): the costlier protocol minus the cheaper, only where both ran, paired on the seeds both have."
    import pandas as pd
    sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "benchmarks" / "crchisto_study")]
    from crchisto_flaglimit import protocol_gains
    rows = [dict(model="bb", protocol=p, flag_limit=fl, seed=s, macro_f1=v, run_id=f"{p}{fl}{s}")
            for p, fl, s, v in [("linear_probe", 64, 0, .50), ("linear_probe", 64, 1, .52), ("linear_probe", 64, 2, .54),
                                ("ft_last", 64, 0, .60), ("ft_last", 64, 1, .61),      # seed 2 did not finish
                                ("linear_probe", 128, 0, .55), ("scratch", 64, 0, .40)]]
    clean = pd.DataFrame(rows).assign(entry=lambda d: d.model + " · " + d.protocol)
    g = protocol_gains(clean)
    assert list(g) == ["bb · ft_last minus linear_probe"] and list(g["bb · ft_last minus linear_probe"]) == ["64"]
    gain = g["bb · ft_last minus linear_probe"]["64"]["gain"]
    assert gain["seeds"] == [0, 1] and gain["n"] == 2 and abs(gain["mean"] - 0.095) < 1e-9

def test_findings_give_a_fine_tuning_curve_its_own_a_and_b_once_it_has_two_flag_limits():
    "ft_last run at 64-256 gets (a)'s gains and (b)'s 95%-of-best like the probe; full_ft at 64 alone gets neither."
    import pandas as pd
    sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "benchmarks" / "crchisto_study")]
    from crchisto_flaglimit import findings
    f1 = {("linear_probe", 64): .55, ("linear_probe", 128): .57, ("ft_last", 64): .60, ("ft_last", 128): .64,
          ("ft_last", 256): .67, ("full_ft", 64): .55}
    rows = [dict(run_id=f"{p}{fl}{s}", model="bb", protocol=p, flag_limit=fl, seed=s, condition="clean", status="ok",
                 macro_f1=v + s / 100, macro_f1_ci_low=v - .02, macro_f1_ci_high=v + .02, weighted_f1=v, accuracy=v,
                 train_seconds=1.0, n_train_per_class=fl) for (p, fl), v in f1.items() for s in (0, 1, 2)]
    f = findings(pd.DataFrame(rows))
    assert set(f["b_saturation"]) == {"bb · linear_probe", "bb · ft_last"}
    assert f["b_saturation"]["bb · ft_last"] == dict(best=pytest.approx(.68), flag_limit_95pct=128)
    a = f["a_scratch_keeps_rising"]["bb · ft_last"]
    assert a["all_seeds_span"] == [64, 256] and a["gain_all_seeds_span"]["mean"] == pytest.approx(.07)
    assert "bb · full_ft" not in f["a_scratch_keeps_rising"] and "bb · full_ft" in f["table"]

def test_prior_gains_extend_a_curve_from_an_earlier_json():
    "Finding (g): paired by seed where both JSONs keep per-seed rows, Welch from mean/sd/n where the prior does not."
    sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "benchmarks" / "crchisto_study")]
    from crchisto_flaglimit import prior_gains
    here = {"bb · ft_last": {"1024": dict(macro_f1=.70, seed_sd=.01, n_seeds=3, seed_macro_f1={"0": .69, "1": .70, "2": .71})},
            "bb · linear_probe": {"1024": dict(macro_f1=.60, seed_sd=.02, n_seeds=3, seed_macro_f1={"0": .58, "1": .60, "2": .62})},
            "bb · full_ft": {"64": dict(macro_f1=.5, seed_sd=.01, n_seeds=3)}}
    old = {"table": {"bb · ft_last": {"256": dict(macro_f1=.62, seed_sd=.02, n_seeds=3), "512": dict(macro_f1=.66, seed_sd=.01, n_seeds=3)},
                     "bb · linear_probe": {"1024": dict(macro_f1=.60, seed_sd=.02, n_seeds=3, seed_macro_f1={"0": .58, "1": .60, "2": .62})},
                     "bb · full_ft": {"128": dict(macro_f1=.6, seed_sd=.01, n_seeds=3)}}}
    g = prior_gains(here, {"old.json": old})
    assert set(g) == {"bb · ft_last", "bb · linear_probe"}          # full_ft: nothing at or below 64 in the prior
    ft = g["bb · ft_last"]["512->1024"]
    assert ft["gain"]["method"] == "Welch over seed means" and abs(ft["gain"]["mean"] - .04) < 1e-9
    lo, hi = ft["gain"]["ci"]
    assert lo < .04 < hi and abs(ft["gain"]["df"] - 4) < 1e-9 and hi - .04 > 2.7 * (2 * .01 ** 2 / 3) ** .5  # t(4) > 2.7
    probe = g["bb · linear_probe"]["1024->1024"]["gain"]           # the re-run reproduces the prior, seed by seed
    assert probe["method"] == "paired by seed" and probe["seeds"] == [0, 1, 2] and probe["mean"] == 0 and probe["ci"] == [0, 0]
    # two priors: the largest FlagLimit not above wins; at a tie the one keeping per-seed rows (paired) wins
    newer = {"table": {"bb · ft_last": {"512": dict(macro_f1=.67, seed_sd=.01, n_seeds=3, seed_macro_f1={"0": .66, "1": .67, "2": .68})},
                       "bb · linear_probe": {"512": dict(macro_f1=.55, seed_sd=.02, n_seeds=3)}}}
    g2 = prior_gains(here, {"old.json": old, "newer.json": newer})
    assert g2["bb · ft_last"]["512->1024"]["prior_json"] == "newer.json" and g2["bb · ft_last"]["512->1024"]["gain"]["method"] == "paired by seed"
    assert g2["bb · ft_last"]["512->1024"]["gain"]["mean"] == pytest.approx(.03) and g2["bb · linear_probe"]["1024->1024"]["prior_json"] == "old.json"
    assert prior_gains(here, {"old.json": newer, "newer.json": old})["bb · ft_last"]["512->1024"]["prior_json"] == "old.json"

def test_prior_protocol_gains_compare_protocols_across_folders():
    "Finding (f) across folders: full_ft here minus ft_last there at the same FlagLimit, the costlier minus the cheaper."
    sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "benchmarks" / "crchisto_study")]
    from crchisto_flaglimit import prior_protocol_gains
    here = {"bb · full_ft": {"128": dict(macro_f1=.60, seed_sd=.02, n_seeds=3, seed_macro_f1={"0": .58, "1": .60, "2": .62}),
                             "256": dict(macro_f1=.66, seed_sd=.01, n_seeds=3, seed_macro_f1={"0": .65, "1": .66, "2": .67})},
            "bb · linear_probe": {"128": dict(macro_f1=.56, seed_sd=.01, n_seeds=3, seed_macro_f1={"0": .55, "1": .56, "2": .57})},
            "cnn": {"128": dict(macro_f1=.5, seed_sd=.01, n_seeds=3)}}
    old = {"table": {"bb · ft_last": {"128": dict(macro_f1=.63, seed_sd=.01, n_seeds=3), "512": dict(macro_f1=.67, seed_sd=.01, n_seeds=3)},
                     "bb · linear_probe": {"128": dict(macro_f1=.56, seed_sd=.01, n_seeds=3), "256": dict(macro_f1=.60, seed_sd=.01, n_seeds=3)},
                     "bb · full_ft": {"64": dict(macro_f1=.55, seed_sd=.01, n_seeds=3)}}}
    g = prior_protocol_gains(here, {"old.json": old})
    # full_ft - ft_last only at 128 (ft_last has no 256 row: no step to a smaller FlagLimit); the probe at 128 is run here,
    # so that pair is the in-folder (f); at 256 the prior's probe stands in; the probe here against ft_last there is left
    # out, since that folder ran its own probe at 128 (its in-folder (f)); the scratch CNN has no protocol to compare
    assert set(g) == {"bb · full_ft minus ft_last", "bb · full_ft minus linear_probe"}
    ff = g["bb · full_ft minus ft_last"]
    assert list(ff) == ["128"] and ff["128"]["gain"]["method"] == "Welch over seed means" and ff["128"]["gain"]["mean"] == pytest.approx(-.03)
    assert ff["128"]["here"] == "bb · full_ft" and ff["128"]["prior"] == "bb · ft_last" and ff["128"]["prior_json"] == "old.json"
    assert list(g["bb · full_ft minus linear_probe"]) == ["256"] and g["bb · full_ft minus linear_probe"]["256"]["gain"]["mean"] == pytest.approx(.06)
    # a cheaper protocol here against a costlier one there keeps the orientation: ft_last (there) minus the probe (here)
    ft_only = {"table": {"bb · ft_last": old["table"]["bb · ft_last"]}}
    rev = prior_protocol_gains({"bb · linear_probe": here["bb · linear_probe"]}, {"ft.json": ft_only})
    assert rev["bb · ft_last minus linear_probe"]["128"]["gain"]["mean"] == pytest.approx(.07)

def test_a_bad_prior_json_is_one_line_before_any_run(tmp_path):
    "--prior that is not a results JSON stops the script at once with a line naming it, before it runs anything."
    bad = tmp_path / "notes.json"; bad.write_text('{"runs": 3}')
    for p, says in ((bad, "no 'table' of curves"), (tmp_path / "missing.json", "cannot read it")):
        r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "crchisto_study" / "crchisto_flaglimit.py"), "--config",
                            str(_cfg("crchisto_flaglimit_ft2048_shared40.yaml")), "--out", str(tmp_path / "runs"),
                            "--prior", str(p)], capture_output=True, text=True, timeout=300)
        assert r.returncode != 0 and says in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert not (tmp_path / "runs").exists()

RECORDS = ROOT / "benchmarks" / "results" / "run_records" / "crchisto_flaglimit_shared40_fullftall"

def test_run_records_rebuild_a_lost_run_folder_and_take_new_runs(tmp_path):
    """--records: the finished runs kept in git rebuild a run folder a fresh checkout lacks (collect then scores them as the
    committed JSON does), a copy cut short is redone, a folder's finished runs are added to the records and failed ones not."""
    sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "benchmarks" / "crchisto_study")]
    from crchisto_flaglimit import restore_records, keep_records
    from cellnb.sweep import collect
    kept = sorted(p.name for p in RECORDS.glob("*/"))
    assert len(kept) >= 2
    out = tmp_path / "study"
    assert restore_records(RECORDS, out) == kept and restore_records(RECORDS, out) == []   # the second call finds them there
    df = collect(out, write=False)
    clean = df[(df.condition == "clean") & (df.status == "ok")].groupby("seed").macro_f1.first()
    table = json.loads((ROOT / "benchmarks" / "results" / "crchisto_flaglimit_shared40_fullftall.json").read_text())["table"]
    seeds = next(iter(next(iter(table.values())).values()))["seed_macro_f1"]   # its one entry at its one FlagLimit (all cells)
    assert {str(k): round(v, 6) for k, v in clean.items()} == {k: round(v, 6) for k, v in seeds.items()}
    (out / "runs" / kept[0] / "result.json").unlink()                # a restore cut short before its last file
    assert restore_records(RECORDS, out) == [kept[0]]
    for f in ("params.json", "predictions.parquet", "output.ipynb", "result.json"):
        assert (out / "runs" / kept[0] / f).read_bytes() == (RECORDS / kept[0] / f).read_bytes()
    failed = [dict(r, status="failed") for r in json.loads((RECORDS / kept[1] / "result.json").read_text())]
    (out / "runs" / kept[1] / "result.json").write_text(json.dumps(failed))    # the run failed in this folder: the record replaces it
    assert restore_records(RECORDS, out) == [kept[1]]
    assert (out / "runs" / kept[1] / "result.json").read_bytes() == (RECORDS / kept[1] / "result.json").read_bytes()
    # keeping: a new finished run is added (no weights), a failed one is not, and the kept ones are not copied again
    new = out / "runs" / "0123456789ab"; new.mkdir()
    rows = json.loads((RECORDS / kept[0] / "result.json").read_text())
    (new / "result.json").write_text(json.dumps([dict(r, run_id=new.name) for r in rows]))
    (new / "model").mkdir(); (new / "model" / "weights.pth").write_bytes(b"w")
    bad = out / "runs" / "ba0000000000"; bad.mkdir()
    (bad / "result.json").write_text(json.dumps([dict(rows[0], run_id=bad.name, status="failed")]))
    rec = tmp_path / "records"
    assert keep_records(out, rec) == sorted([*kept, new.name]) and keep_records(out, rec) == []
    assert not (rec / new.name / "model").exists() and not (rec / bad.name).exists()

def test_records_that_is_a_file_is_one_line(tmp_path):
    f = tmp_path / "records.txt"; f.write_text("x")
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "crchisto_study" / "crchisto_flaglimit.py"), "--config",
                        str(_cfg("crchisto_flaglimit_fullftall_shared40.yaml")), "--out", str(tmp_path / "runs"),
                        "--records", str(f)], capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "is a file, not a folder" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "runs").exists()

def test_tables_quote_the_committed_shared_patch_results():
    "benchmarks/crchisto_study/tables.py renders the shared-40-px-patch JSONs: curves, (a), (b), (d), (e), (f)."
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "crchisto_study" / "tables.py"), "shared40", "classmix_shared40"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    for line in ("| effnet_lite0_in1k · linear_probe | 0.559 (n=3)", "(a) gains with data, paired by seed",
                 "effnet_lite0_in1k · linear_probe: best 0.642, 95% of it at 512", "(f) protocols against each other",
                 "| 0.667 (n=3) |", "| effnet_lite0_in1k · ft_last minus linear_probe | 512 | +0.038 [+0.010, +0.066] (n=3)",
                 "| effnet_lite0_in1k · ft_last minus linear_probe | 64 | +0.036 [-0.011, +0.083] (n=3)",
                 "| effnet_lite0_in1k · linear_probe | mean |"):
        assert line in r.stdout, line

def _table_says(name, lines, quoted=()) -> str:
    """Run `benchmarks/crchisto_study/tables.py name`, check that each line is in what it prints and each of `quoted` (numbers the
    tidy tables carry to the report) in it too; its output."""
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "crchisto_study" / "tables.py"), name], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    for line in (*lines, *quoted): assert line in r.stdout, line
    return r.stdout

def test_tables_quote_the_committed_ft_extension_results():
    "tables.py ft1024 / ft2048 render the committed JSON: per-seed rows, (g) against the earlier JSONs, (f), (d)."
    _table_says("ft1024", ("6 of 6 runs ok", "| effnet_lite0_in1k · ft_last | 1024 | 0.680 (n=3) | 0: 0.684, 1: 0.689, 2: 0.667 |",
                 "| effnet_lite0_in1k · ft_last | 512 -> 1024 | 0.680 | 0.667 | +0.013 [-0.013, +0.038] | Welch over seed means |",
                 "| effnet_lite0_in1k · linear_probe | 1024 -> 1024 | 0.635 | 0.635 | +0.000 [-0.016, +0.016] |",
                 "| effnet_lite0_in1k · ft_last minus linear_probe | 1024 | +0.045 [-0.000, +0.090] (n=3) |",
                 "effnet_lite0_in1k · ft_last pre -0.380 [-0.482, -0.277] (n=3) at 1024"))
    _table_says("ft2048", ("| effnet_lite0_in1k · ft_last | 2048 | 0.703 (n=3) | 0: 0.705, 1: 0.712, 2: 0.692 |",
                 "| effnet_lite0_in1k · ft_last | 1024 -> 2048 | 0.703 | 0.680 | +0.023 [+0.018, +0.028] | paired by seed | crchisto_flaglimit_shared40_ft1024.json |",
                 "| effnet_lite0_in1k · linear_probe | 2048 -> 2048 | 0.642 | 0.642 | +0.000 [-0.007, +0.007] |",
                 "| effnet_lite0_in1k · ft_last minus linear_probe | 2048 | +0.061 [+0.028, +0.094] (n=3) |",
                 "| effnet_lite0_in1k · ft_last | 2048 | 0.703 | cnn 0.681 | +0.022 [+0.001, +0.043] |"))
    bad = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "crchisto_study" / "tables.py"), "ft1042"], capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "no table 'ft1042'; choose from" in bad.stderr and "Traceback" not in bad.stderr, bad.stderr

def test_fullft_grid_table_quotes_the_committed_json():
    "tables.py fullft_grid renders the committed JSON: (a) within the folder, (g), (f) in and across folders."
    _table_says("fullft_grid", ("12 of 12 runs ok", "| effnet_lite0_in1k · full_ft | 128 | 0.561 (n=3) | 0: 0.559, 1: 0.574, 2: 0.551 |",
                 "effnet_lite0_in1k · full_ft: 128 -> 256 -0.002 [-0.021, +0.017] (n=3)",
                 "| effnet_lite0_in1k · linear_probe | 256 -> 256 | 0.598 | 0.598 | +0.000 [-0.013, +0.013] |",
                 "| effnet_lite0_in1k · full_ft minus linear_probe | 256 | -0.039 [-0.049, -0.029] (n=3) |",
                 "| effnet_lite0_in1k · full_ft minus ft_last | 128 | full_ft 0.561 | ft_last 0.631 | -0.069 [-0.096, -0.043] | Welch over seed means |",
                 "| effnet_lite0_in1k · full_ft minus ft_last | 256 | full_ft 0.560 | ft_last 0.633 | -0.073 [-0.118, -0.028] |"),
                quoted=("-0.069 [-0.096, -0.043]", "-0.073 [-0.118, -0.028]", "-0.039 [-0.049, -0.029]", "-0.002 [-0.021, +0.017]"))

def test_cv_table_renders_the_committed_json():
    "`tables.py cv` over the committed crchisto_cv.json: the ft_last row and the 30-epoch CNN that the report quotes."
    _table_says("cv", ("| effnet_lite0_in1k/ft_last/4ep/shared40 | ft_last | 48 | all | 4 (2/2) | no |",
                       "| cnn/scratch/30ep | scratch | 48 | all | 30 (22/29) | no | 0.806 [0.781, 0.828] | 0.748 [0.719, 0.771] | 0.802 [0.778, 0.825] |"))

def test_cv_gpu_table_renders_the_committed_json():
    "`tables.py cv_gpu` over the committed crchisto_cv_gpu.json: full_ft on every cell on one H200."
    _table_says("cv_gpu", ("no task-specific (scratch) entry in crchisto_cv_gpu.json yet; best overall: effnet_lite0_in1k/full_ft",
                                 "| effnet_lite0_in1k/full_ft | full_ft | 64 | all | 10 (3/7) | no | 0.801 [0.779, 0.824] | 0.750 [0.719, 0.771] | 0.798 [0.775, 0.821] |"))

def test_cv_head_names_a_task_specific_model_only_when_a_scratch_entry_exists():
    "The 0.80 target names the best task-specific model: a backbone-only JSON (the GPU run) has none, and says so."
    sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "benchmarks" / "crchisto_study")]
    from crchisto_cv import best_entries
    probe, ft = {"protocol": "linear_probe", "weighted_f1": 0.65}, {"protocol": "full_ft", "weighted_f1": 0.80}
    assert best_entries({"p": probe, "f": ft}) == dict(best_model=None, best_weighted_f1=None, best_overall="f")
    cnn = {"protocol": "scratch", "weighted_f1": 0.79}
    assert best_entries({"p": probe, "f": ft, "c": cnn}) == dict(best_model="c", best_weighted_f1=0.79, best_overall="f")
    committed = json.loads((ROOT / "benchmarks" / "results" / "crchisto_cv.json").read_text())
    assert {k: committed[k] for k in ("best_model", "best_weighted_f1", "best_overall")} == best_entries(committed["models"])

def test_ftall_table_quotes_the_committed_json():
    "tables.py ftall renders the committed JSON (3 seeds): (g) from 2048, (f), the scratch references."
    _table_says("ftall", ("6 of 6 runs ok", "| effnet_lite0_in1k · ft_last | all | 0.723 (n=3) | 0: 0.724, 1: 0.717, 2: 0.729 |",
                 "| effnet_lite0_in1k · ft_last | 2048 -> all | 0.723 | 0.703 | +0.020 [-0.020, +0.060] | paired by seed | crchisto_flaglimit_shared40_ft2048.json |",
                 "| effnet_lite0_in1k · linear_probe | all -> all | 0.631 | 0.631 | +0.000 [+0.000, +0.000] |",
                 "| effnet_lite0_in1k · ft_last minus linear_probe | all | +0.093 [+0.078, +0.108] (n=3) |",
                 "| effnet_lite0_in1k · ft_last | all | 0.723 | cnn 0.679 | +0.044 [-0.027, +0.115] |"),
                quoted=("+0.093 [+0.078, +0.108]", "+0.044 [-0.027, +0.115]", "+0.020 [-0.020, +0.060]"))

def test_cv_compare_is_paired_and_kept_beside_the_rows(tmp_path, monkeypatch):
    "crchisto_cv.py --compare A,B: B - A from the saved fold probabilities on the pooled test cells (sklearn's figures), kept in the JSON."
    import json, os, numpy as np
    from sklearn.metrics import f1_score
    import scipy.io as sio
    from PIL import Image
    sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "benchmarks" / "crchisto_study")]
    import _common, crchisto_cv as cv
    root, rng = tmp_path / "crc", np.random.default_rng(0)
    for n in range(1, 9):   # CRCHisto's layout, 8 tiles of 120 px with 3-6 cells of each class
        d = root / "Classification" / f"img{n}"; d.mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (120, 120, 3), dtype=np.uint8)).save(d / f"img{n}.bmp")
        for c in ("epithelial", "fibroblast", "inflammatory", "others"):
            sio.savemat(d / f"img{n}_{c}.mat", {"detection": rng.uniform(10, 110, (int(rng.integers(3, 7)), 2))})
    monkeypatch.setenv("CELLNB_CRCHISTO", str(root)); monkeypatch.setenv("CELLNB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(cv, "RUNS", tmp_path / "runs"); monkeypatch.setattr(_common, "RESULTS", tmp_path)
    monkeypatch.setattr(cv, "_FOLDS", {})
    cfg = dict(crop=48, folds=2, split_seed=0, seed=0, n_boot=10)
    classes = ["epithelial", "fibroblast", "inflammatory", "others"]
    out = tmp_path / "cv.json"
    out.write_text(json.dumps({"models": {"a/x": {}, "b/y": {}}, "machine": {}}))
    truth = {}
    for k, (_, test) in enumerate(cv._folds_at(48, cfg)):
        y = test.labels.numpy(); truth[k] = y
        for key, acc in (("a/x", 0.5), ("b/y", 0.9)):
            d = tmp_path / "runs" / key.replace("/", "_") / f"fold{k}"; d.mkdir(parents=True)
            (d / "config.json").write_text(json.dumps(dict(src_size=48, classes=classes)))
            pred = np.where(rng.random(len(y)) < acc, y, (y + 1) % 3)
            np.save(d / "test_probs.npy", np.eye(4)[pred] * 0.7 + 0.075)
    cv._compare(["a/x", "b/y"], False, cfg, out)
    r = json.loads(out.read_text())["comparisons"]["b/y - a/x"]
    P = {key: np.concatenate([np.load(tmp_path / "runs" / key.replace("/", "_") / f"fold{k}" / "test_probs.npy").argmax(1) for k in (0, 1)]) for key in ("a/x", "b/y")}
    t = np.concatenate([truth[0], truth[1]])
    want = f1_score(t, P["b/y"], average="weighted") - f1_score(t, P["a/x"], average="weighted")
    assert r["weighted_f1"]["diff"] == pytest.approx(want) and r["weighted_f1"]["ci"][0] <= want <= r["weighted_f1"]["ci"][1]
    assert r["n_cells"] == len(t) and r["n_images"] == 8 and len(r["folds"]) == 2 and set(r) >= {"macro_f1", "accuracy"}
    assert json.loads(out.read_text())["models"] == {"a/x": {}, "b/y": {}}    # the rows stay as they were
    from tables import _cv_comparisons   # how tables.py cv prints it under the CV table
    line = _cv_comparisons(json.loads(out.read_text())["comparisons"]).splitlines()[-1]
    assert line.startswith(f"| b/y - a/x | no | {want:+.3f} [") and line.endswith(f"| 8 / {len(t)} |")
    # STEM:KEY, an entry of another config with the same folds (a GPU run's probabilities unpacked into benchmarks/runs/STEM)
    import shutil
    gpu = tmp_path / "crchisto_cv_gpu"; shutil.copytree(tmp_path / "runs" / "b_y", gpu / "b_y")
    (tmp_path / "crchisto_cv_gpu.json").write_text(json.dumps({"models": {"b/y": {}}}))
    cv._compare(["a/x", "crchisto_cv_gpu:b/y"], False, cfg, out)
    r2 = json.loads(out.read_text())["comparisons"]["crchisto_cv_gpu:b/y - a/x"]
    assert r2["weighted_f1"]["diff"] == pytest.approx(want) and r2["n_cells"] == len(t)
    with pytest.raises(SystemExit, match=r"crchisto_cv_gpu.json has no row 'a/x'; copy its run's crchisto_cv_gpu.json into benchmarks/results/"):
        cv._compare(["crchisto_cv_gpu:a/x", "b/y"], False, cfg, out)
    with pytest.raises(SystemExit, match=r"splits other folds \(split_seed 0 here 1\)"): cv._compare(["a/x", "crchisto_cv_gpu:b/y"], False, {**cfg, "split_seed": 1}, out)
    with pytest.raises(SystemExit, match=r"no config nosuch.yaml in benchmarks/"): cv._compare(["a/x", "nosuch:b/y"], False, cfg, out)
    with monkeypatch.context() as m:   # run as the GPU config itself: STEM:KEY of its own stem is the same entry
        m.setattr(cv, "RUNS", gpu)
        with pytest.raises(SystemExit, match="two different keys"): cv._compare(["b/y", "crchisto_cv_gpu:b/y"], False, cfg, tmp_path / "crchisto_cv_gpu.json")
    (tmp_path / "crchisto_cv_gpu.json").write_text(json.dumps({"models": {"a/x": {}, "b/y": {}}}))   # a row whose probabilities did not come back
    with pytest.raises(SystemExit, match=r"no saved test probabilities of 'a/x' fold 0; unpack its GPU run's probabilities \(tar xzf crchisto_cv_gpu_probs.tgz"):
        cv._compare(["b/y", "crchisto_cv_gpu:a/x"], False, cfg, out)
    cells = gpu / "b_y" / "fold1" / "test_cells.npy"; np.save(cells, np.arange(len(truth[1])))   # another split's test cells
    with pytest.raises(SystemExit, match="fold 1 tested other cells than this machine's fold 1"): cv._compare(["a/x", "crchisto_cv_gpu:b/y"], False, cfg, out)
    cv._save_probs(gpu / "b_y" / "fold1", np.load(gpu / "b_y" / "fold1" / "test_probs.npy"), False, cv._folds_at(48, cfg)[1][1])
    assert np.array_equal(np.load(cells), cv._folds_at(48, cfg)[1][1].root_idx)   # saved with the probabilities: pairs again
    cv._compare(["a/x", "crchisto_cv_gpu:b/y"], False, cfg, out)
    (gpu / "b_y" / "fold0" / "config.json").unlink()
    with pytest.raises(SystemExit, match="without the config.json saved beside them"): cv._compare(["a/x", "crchisto_cv_gpu:b/y"], False, cfg, out)
    with pytest.raises(SystemExit, match="two different keys"): cv._compare(["a/x", "a/x"], False, cfg, out)
    with pytest.raises(SystemExit, match="no row 'c/z'"): cv._compare(["a/x", "c/z"], False, cfg, out)
    with pytest.raises(SystemExit, match=r"no saved test probabilities of 'a/x' fold 0; .*--rescore a/x --tta"): cv._compare(["a/x", "b/y"], True, cfg, out)
    w = tmp_path / "runs" / "a_x" / "fold1" / "model.pt"; w.write_bytes(b"weights trained after the probabilities")
    os.utime(w, (w.stat().st_mtime + 60,) * 2)
    with pytest.raises(SystemExit, match="older than the model beside it"): cv._compare(["a/x", "b/y"], False, cfg, out)

@pytest.mark.parametrize("name, lines, quoted", [
    # tables.py fullft512 renders the committed JSON: (g) from 256, (f) against the probe and ft_last.
    pytest.param("fullft512", ("6 of 6 runs ok",
         "| effnet_lite0_in1k · full_ft | 512 | 0.610 (n=3) | 0: 0.604, 1: 0.613, 2: 0.613 |",
         "| effnet_lite0_in1k · full_ft | 256 -> 512 | 0.610 | 0.560 | +0.050 [+0.038, +0.062] | paired by seed |",
         "| effnet_lite0_in1k · full_ft minus linear_probe | 512 | -0.019 [-0.034, -0.004] (n=3) |",
         "| effnet_lite0_in1k · full_ft minus ft_last | 512 | full_ft 0.610 | ft_last 0.667 | -0.057 [-0.080, -0.035] |"),
         ("-0.057 [-0.080, -0.035]", "+0.050 [+0.038, +0.062]", "-0.019 [-0.034, -0.004]"), id="fullft512"),
    # tables.py fullft1024 renders the committed JSON: (g) from 512, (f) against ft_last and the probe of the ft1024 folder.
    pytest.param("fullft1024", ("3 of 3 runs ok",
         "| effnet_lite0_in1k · full_ft | 1024 | 0.674 (n=3) | 0: 0.675, 1: 0.679, 2: 0.668 |",
         "| effnet_lite0_in1k · full_ft | 512 -> 1024 | 0.674 | 0.610 | +0.064 [+0.045, +0.084] | paired by seed |",
         "none: this folder ran one protocol",
         "| effnet_lite0_in1k · full_ft minus ft_last | 1024 | full_ft 0.674 | ft_last 0.680 | -0.006 [-0.022, +0.010] | paired by seed |",
         "| effnet_lite0_in1k · full_ft minus linear_probe | 1024 | full_ft 0.674 | linear_probe 0.635 | +0.039 [+0.008, +0.070] | paired by seed |"),
         ("-0.006 [-0.022, +0.010]", "+0.064 [+0.045, +0.084]", "+0.039 [+0.008, +0.070]"), id="fullft1024"),
    # tables.py fullft512long renders the committed JSON: the steps part and the cells part of full_ft's 512 -> 1024 step.
    pytest.param("fullft512long", ("3 of 3 runs ok",
         "| effnet_lite0_in1k · full_ft | 512 | 0.663 (n=3) | 0: 0.666, 1: 0.669, 2: 0.654 |",
         "| more steps, same cells | 512 cells, 128 steps: 0.610 | 512 cells, 256 steps: 0.663 | +0.053 [+0.026, +0.080] | paired by seed | 0, 1, 2 |",
         "| more cells, same steps | 512 cells, 256 steps: 0.663 | 1024 cells, 256 steps: 0.674 | +0.011 [+0.003, +0.019] | paired by seed | 0, 1, 2 |",
         "| both (the curve's step) | 512 cells, 128 steps: 0.610 | 1024 cells, 256 steps: 0.674 | +0.064 [+0.045, +0.084] |"),
         ("+0.011 [+0.003, +0.019]", "+0.053 [+0.026, +0.080]", "-0.004 [-0.026, +0.018]"), id="fullft512long"),
    # tables.py ftlast512long renders the committed JSON: ft_last's 512 -> 1024 step split, and full_ft against ft_last at 512 with 256 steps each.
    pytest.param("ftlast512long", ("3 of 3 runs ok",
         "| effnet_lite0_in1k · ft_last | 512 | 0.673 (n=3) | 0: 0.669, 1: 0.681, 2: 0.670 |",
         "| more steps, same cells | 512 cells, 128 steps: 0.667 | 512 cells, 256 steps: 0.673 | +0.006 [-0.016, +0.028] | Welch over seed means |",
         "| more cells, same steps | 512 cells, 256 steps: 0.673 | 1024 cells, 256 steps: 0.680 | +0.007 [-0.016, +0.030] | paired by seed | 0, 1, 2 |",
         "| effnet_lite0_in1k · full_ft minus ft_last | 512 | ft_last 0.673 | full_ft 0.663 | -0.010 [-0.028, +0.007] | paired by seed |"),
         ("+0.006 [-0.016, +0.028]", "+0.007 [-0.016, +0.030]", "-0.010 [-0.028, +0.007]"), id="ftlast512long"),
    # tables.py fullft256long renders the committed JSON: full_ft's 256 -> 512 step split, and full_ft against ft_last at 256 with 128 steps.
    pytest.param("fullft256long", ("3 of 3 runs ok",
         "| effnet_lite0_in1k · full_ft | 256 | 0.624 (n=3) | 0: 0.630, 1: 0.615, 2: 0.626 |",
         "| more steps, same cells | 256 cells, 64 steps: 0.560 | 256 cells, 128 steps: 0.624 | +0.064 [+0.035, +0.094] | paired by seed | 0, 1, 2 |",
         "| more cells, same steps | 256 cells, 128 steps: 0.624 | 512 cells, 128 steps: 0.610 | -0.014 [-0.043, +0.016] | paired by seed | 0, 1, 2 |",
         "| effnet_lite0_in1k · full_ft minus ft_last | 256 | full_ft 0.624 | ft_last 0.633 | -0.009 [-0.050, +0.032] | Welch over seed means |"),
         ("+0.064 [+0.035, +0.094]", "-0.014 [-0.043, +0.016]", "-0.009 [-0.050, +0.032]"), id="fullft256long"),
    # tables.py fullft2048 renders the JSON: (g) from 1024, (f) against ft_last and the probe of the ft2048 folder.
    pytest.param("fullft2048", ("3 of 3 runs ok",
         "| effnet_lite0_in1k · full_ft | 2048 | 0.702 (n=3) | 0: 0.696, 1: 0.695, 2: 0.715 |",
         "| effnet_lite0_in1k · full_ft | 1024 -> 2048 | 0.702 | 0.674 | +0.028 [-0.014, +0.070] | paired by seed |",
         "| effnet_lite0_in1k · full_ft minus ft_last | 2048 | full_ft 0.702 | ft_last 0.703 | -0.001 [-0.055, +0.052] | paired by seed |",
         "| effnet_lite0_in1k · full_ft minus linear_probe | 2048 | full_ft 0.702 | linear_probe 0.642 | +0.059 [+0.035, +0.084] | paired by seed |"),
         ("-0.001 [-0.055, +0.052]", "+0.028 [-0.014, +0.070]", "+0.059 [+0.035, +0.084]"), id="fullft2048"),
    # tables.py fullftall renders the JSON.
    pytest.param("fullftall", ("3 of 3 runs ok",
         '| effnet_lite0_in1k · full_ft | all | 0.737 (n=3) | 0: 0.731, 1: 0.739, 2: 0.741 | 0.797 | 4209 |',
         '| effnet_lite0_in1k · full_ft | 2048 -> all | 0.737 | 0.702 | +0.035 [+0.013, +0.058] | paired by seed | crchisto_flaglimit_shared40_fullft2048.json |',
         '| effnet_lite0_in1k · full_ft minus ft_last | all | full_ft 0.737 | ft_last 0.723 | +0.014 [-0.005, +0.033] | paired by seed | crchisto_flaglimit_shared40_ftall.json |',
         '| effnet_lite0_in1k · full_ft minus linear_probe | all | full_ft 0.737 | linear_probe 0.631 | +0.106 [+0.093, +0.120] | paired by seed | crchisto_flaglimit_shared40_ftall.json |',
         ), ('+0.014 [-0.005, +0.033]', '+0.035 [+0.013, +0.058]', '+0.106 [+0.093, +0.120]'), id="fullftall"),
])
def test_one_folder_table_quotes_the_committed_json(name, lines, quoted):
    "tables.py renders each one-folder JSON as it: the lines it prints, and the figures the text quotes."
    _table_says(name, lines, quoted)

BENCH_STEP = [sys.executable, str(ROOT / "benchmarks" / "performance" / "bench_finetune_step.py")]

def test_finetune_step_bench_refuses_bad_input_in_one_line(tmp_path):
    "No data needed: a zero batch and a CRCHisto that is not there are refused before anything loads."
    import os
    env = dict(os.environ, CELLNB_RESULTS_DIR=str(tmp_path), CELLNB_CRCHISTO=str(tmp_path))
    for args, says in ((["--batch", "0"], "must be at least 1"), ([], "CRCHisto not found")):
        r = subprocess.run(BENCH_STEP + args, capture_output=True, text=True, timeout=300, env=env)
        assert r.returncode != 0 and says in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not list(tmp_path.glob("*.json"))

def test_finetune_step_bench_times_both_layouts_on_crchisto_cells(tmp_path):
    "bench_finetune_step.py: one step per layout on real cells, its JSON where CELLNB_RESULTS_DIR says; a batch over the dataset is one line."
    import os
    from cellnb.core import require_crchisto
    data = require_crchisto()
    bench = BENCH_STEP
    env = dict(os.environ, CELLNB_RESULTS_DIR=str(tmp_path), CELLNB_CRCHISTO=str(data))
    r = subprocess.run(bench + ["--batch", "2", "--repeats", "1", "--threads", "1"], capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads((tmp_path / "bench_finetune_step.json").read_text())
    assert set(res["seconds_per_step"]) == {"NCHW", "NHWC"} and res["ratio"] > 0 and res["batch"] == 2
    r = subprocess.run(bench + ["--batch", "100000"], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode != 0 and "more than CRCHisto's" in r.stderr and "Traceback" not in r.stderr, r.stderr

def test_results_tables_are_in_step_with_the_jsons(tmp_path):
    "The tidy CSVs the study notebook reads are what benchmarks/results_tables.py makes of the committed JSONs; a stale one is named."
    tool = ROOT / "benchmarks" / "results_tables.py"
    r = subprocess.run([sys.executable, str(tool), "--check"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr + r.stdout
    import shutil
    res = tmp_path / "results"; shutil.copytree(ROOT / "benchmarks" / "results", res, ignore=shutil.ignore_patterns("run_records"))
    (res / "cv.csv").write_text((res / "cv.csv").read_text().replace("0.8018", "0.8118", 1))
    import os
    r = subprocess.run([sys.executable, str(tool), "--check"], capture_output=True, text=True, timeout=300, env=dict(os.environ, CELLNB_RESULTS_DIR=str(res)))
    assert r.returncode == 1 and "cv.csv differ from the JSONs" in r.stderr and "Traceback" not in r.stderr, r.stderr

def test_protocol_differences_against_a_prior_point_the_way_their_key_says(tmp_path):
    "A gain from --prior keyed 'full_ft minus lora' is full_ft minus lora in flaglimit_differences.csv, whichever side ran here."
    import os, shutil
    shutil.copytree(ROOT / "benchmarks" / "results", tmp_path, dirs_exist_ok=True, ignore=shutil.ignore_patterns("run_records"))
    here = {"here": "effnet_lite0_in1k · lora", "here_macro_f1": 0.645, "prior": "effnet_lite0_in1k · full_ft", "prior_macro_f1": 0.560,
            "prior_json": "crchisto_flaglimit_shared40_fullft_grid.json", "gain": {"mean": -0.085, "ci": [-0.109, -0.061], "n": 3, "method": "paired by seed"}}
    (tmp_path / "crchisto_lora.json").write_text(json.dumps({"table": {}, "f_against_prior": {"effnet_lite0_in1k · full_ft minus lora": {"256": here}}}))
    code = "import sys; sys.path.insert(0, 'benchmarks'); import results_tables as t; print(t.differences().to_json(orient='records'))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT, env=dict(os.environ, CELLNB_RESULTS_DIR=str(tmp_path)))
    assert r.returncode == 0, r.stderr
    (row,) = [x for x in json.loads(r.stdout) if x["experiment"] == "crchisto_lora"]
    assert (row["entry"], row["other"], row["mean"]) == ("effnet_lite0_in1k · full_ft", "effnet_lite0_in1k · lora", -0.085)
