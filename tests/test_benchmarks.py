"""The prepared GPU check runs its whole code path on CPU (`--dry-run`), so it does not rot."""

import importlib.util
import json
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from smoothprobe.probes import PRESETS, PROBES

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def test_gpu_check_dry_run_covers_every_preset_the_overhead_figures_ddp_and_the_adaptive_run(
        capsys, monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(SCRIPT.parent))  # as when run as a script: it imports probe_overhead
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    gpu_check = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "gpu_check", gpu_check)  # dataclasses look their module up there
    spec.loader.exec_module(gpu_check)
    path = tmp_path / "summary.json"
    # lion: cheap LMOs, the same code path
    assert gpu_check.main(["--dry-run", "--optimizer", "lion", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    for probe in ("time_secant", "time_curv_hvp", "time_top_eig", "time_trace", "time_curv_dual", "time_curv_fd"):
        assert f"{probe} " in out
    assert "adaptive run: 2 steps in" in out and "ddp: 2 processes" in out and out.rstrip().endswith("ok")
    summary = json.loads(path.read_text())
    assert {"device", "torch", "presets", "overhead", "adaptive", "ddp", "checks", "ok"} <= set(summary)
    assert summary["ok"] and summary["checks"] == dict.fromkeys(("presets", "overhead", "adaptive", "ddp"), "pass")
    presets = summary["presets"]
    assert set(PRESETS) <= set(presets) and presets["full"]["probes"] == list(PROBES)
    ratios = [r for name in PRESETS for r in presets[name]["time_over_forward_backward"].values()]
    figures = summary["overhead"]["figures"]
    assert {"cheap / bare step", "secant minus bare / forward+backward",
            "secant+curv_hvp minus secant / gradient"} <= set(figures)
    ratios += [f[key] for f in figures.values() for key in ("value", "sigma") if key in f]
    ratios += [summary["ddp"]["step_time_s"], summary["adaptive"]["loss_last"]]
    assert ratios and all(isinstance(r, float) and math.isfinite(r) for r in ratios)
    assert presets["full"]["peak_over_bare"] is None  # memory is counted on CUDA only


def load_warmup_grid(monkeypatch):
    path = SCRIPT.parent / "warmup_grid.py"
    spec = importlib.util.spec_from_file_location("warmup_grid", path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "warmup_grid", module)
    spec.loader.exec_module(module)
    return module


def _finish(wg, out, arm, loss, status="finished"):
    path = wg.result_path(out, arm)
    path.parent.mkdir(parents=True, exist_ok=True)
    result = {**wg.dataclasses.asdict(arm), "design": wg.design_of(arm.kind), "lr": arm.lr, "name": arm.name, "status": status,
              "val_loss": loss,
              "peak_lr": arm.lr, "seconds": 1.0, "error": None, "decision": None}
    path.write_text(wg.json.dumps(result))


def test_the_lr_scan_extends_until_its_best_lr_is_interior(tmp_path, monkeypatch):
    wg = load_warmup_grid(monkeypatch)
    arms, star = wg.scan_state(tmp_path, "lion")
    assert star is None and sorted({a.k for a in arms}) == list(range(-3, 4)) and len(arms) == 14
    for arm in arms:  # loss falls towards lower LRs: the best sits at the scan's low edge
        _finish(wg, tmp_path, arm, 2.0 + 0.1 * arm.k + (0.05 if arm.warmup else 0.0))
    arms, star = wg.scan_state(tmp_path, "lion")
    assert star is None and min(a.k for a in arms) == -4  # one more factor of 2 down
    for arm in arms:
        if arm.k == -4:
            _finish(wg, tmp_path, arm, 1.8 if arm.warmup else math.inf, "finished" if arm.warmup else "diverged")
    _, star = wg.scan_state(tmp_path, "lion")
    assert star == -3  # -4 is worse (1.8 > 1.7): the best is interior
    plan = wg.plan(tmp_path, ["lion"], [0, 1, 2], {"scan", "grid", "adaptive", "stress"})
    assert len(plan) == len(set(plan))
    grid = [a for a in plan if a.kind == "grid" and a.lr_factor == 1.0 and a.warmup != wg.TWIN]
    assert {(a.k, a.warmup) for a in grid if a.seed == 1} == {(k, w) for k in (-4, -3, -2) for w in wg.GRID_WARMUPS}
    assert {a.kind for a in plan if a.seed == 2} >= {"practical", "closed", "fitted", "own_peak", "grid"}
    stress = next(a for a in plan if a.lr_factor == 10.0 and a.kind == "closed")
    assert stress.lr == pytest.approx(10 * 1e-3 / 8)
    # the stress tier comes after the first seed's tier and the head-to-head, before the other seeds' tiers
    first = plan.index(next(a for a in plan if a.lr_factor == 10.0))
    assert {a.seed for a in plan[:first]} == {0, 1} and 2 in {a.seed for a in plan[first:]}


def test_the_progress_stage_runs_the_grids_two_ends_and_the_progress_test_at_lr_star_on_every_seed(
        tmp_path, monkeypatch):
    wg = load_warmup_grid(monkeypatch)
    _scan(wg, tmp_path, "adamw", 0)  # every scan point but those next to k = 0 scores 2.5
    _finish(wg, tmp_path, wg.Arm("adamw", "grid", 0, 0.0, 0), 2.0)  # lr* = the guess (k = 0)
    plan = wg.plan(tmp_path, ["adamw"], [0, 1, 2], {"scan", "progress"})
    assert len(plan) == len(set(plan)) and plan[:14] == wg.scan_state(tmp_path, "adamw")[0]
    ends = {(a.kind, a.warmup, a.seed) for a in plan if a.k == 0}
    assert ends == {(kind, w, seed) for seed in (0, 1, 2) for kind, w in
                    (("grid", 0.0), ("grid", 0.25), ("closed_progress", 0.0))} | {("grid", 0.1, 0)}
    assert wg.base_config(False, "cpu", "markov").task == "markov" and wg.base_config(True, "cpu").task == "lm"
    loops = set(wg.plan(tmp_path, ["adamw"], [0, 1, 2], {"scan", "loops"})) - set(plan)  # the closed loops' stage
    assert loops == {wg.Arm("adamw", kind, k, 0.0, seed) for seed in (0, 1, 2)
                     for kind, k in (("closed", 0), ("own_peak", None), ("closed_exact", 0))}
    exact = wg.config_of(wg.Arm("adamw", "closed_exact", 0, 0.0, 0), wg.base_config(False, "cpu", "markov"), tmp_path)
    assert exact.adaptive.f_star is None and exact.adaptive.pilot == wg.PILOT and exact.lr == wg.GUESS["adamw"]


def test_the_lr_scan_stays_open_until_both_warmups_ran_at_every_lr(tmp_path, monkeypatch):
    wg = load_warmup_grid(monkeypatch)
    arms, _ = wg.scan_state(tmp_path, "muon")
    for arm in arms:  # best at k = 0, interior; warm-up 10 % at k = 3 still running
        if arm.k != 3 or not arm.warmup:
            _finish(wg, tmp_path, arm, 2.0 + 0.1 * abs(arm.k))
    assert wg.scan_state(tmp_path, "muon")[1] is None
    _finish(wg, tmp_path, wg.Arm("muon", "grid", 3, 0.1, 0), 2.3)
    assert wg.scan_state(tmp_path, "muon")[1] == 0


def _scan(wg, out, opt, best_k, seeds=(0,)):
    """A finished LR scan whose best is `best_k` (every other scan point scores 2.5)."""
    for k in wg.SCAN_K:
        for w in wg.SCAN_WARMUPS:
            for seed in seeds if abs(k - best_k) <= 1 else (0,):
                if not wg.result_path(out, wg.Arm(opt, "grid", k, w, seed)).exists():
                    _finish(wg, out, wg.Arm(opt, "grid", k, w, seed), 2.5)


def _grid(wg, out, opt, star_k, seeds):
    """The rest of the 2-D grid around lr* = guess·2^star_k: every point not yet run scores 2.5."""
    for k in (star_k - 1, star_k, star_k + 1):
        for w in wg.GRID_WARMUPS:
            for seed in seeds:
                if not wg.result_path(out, wg.Arm(opt, "grid", k, w, seed)).exists():
                    _finish(wg, out, wg.Arm(opt, "grid", k, w, seed), 2.5)


def test_the_lrs_stage_runs_the_closed_loop_beside_lr_star_and_is_judged_against_that_lrs_own_grid(
        tmp_path, monkeypatch):
    """The closed loop at lr*/2 and 2·lr* is planned on every seed, compared (paired) with the best warm-up
    of the grid at the same LR, and left out of the decision count, which is the benchmark's at lr*."""
    wg = load_warmup_grid(monkeypatch)
    _finish(wg, tmp_path, wg.Arm("lion", "grid", 0, 0.0, 0), 2.0)  # lr* = the guess (k = 0)
    _scan(wg, tmp_path, "lion", 0, seeds=(0, 1))
    _grid(wg, tmp_path, "lion", 0, (0, 1))
    lrs = set(wg.plan(tmp_path, ["lion"], [0, 1], {"scan", "lrs"})) - set(wg.scan_state(tmp_path, "lion")[0])
    assert lrs == {wg.Arm("lion", kind, k, 0.0, seed) for kind in ("closed", "closed_window") for k in (-1, 1)
                   for seed in (0, 1)}
    window = set(wg.plan(tmp_path, ["lion"], [0, 1], {"scan", "window"})) - set(wg.scan_state(tmp_path, "lion")[0])
    assert window == {wg.Arm("lion", kind, 0, 0.0, seed) for kind in ("closed", "closed_window") for seed in (0, 1)}
    config = wg.config_of(wg.Arm("lion", "closed_window", 0, 0.0, 0), wg.base_config(False, "cpu"), tmp_path)
    assert config.adaptive.window_tested and not config.adaptive.step_test and config.adaptive.pilot == wg.PILOT
    tested = {kind: wg.config_of(wg.Arm("lion", kind, 0 if kind != "own_peak" else None, 0.0, 0),
                                 wg.base_config(False, "cpu"), tmp_path).adaptive.window_tested
              for kind in ("closed", "closed_step", "own_peak", "closed_window")}
    assert tested == {"closed": False, "closed_step": False, "own_peak": False, "closed_window": True}
    for seed, noise in ((0, 0.0), (1, 0.01)):
        _finish(wg, tmp_path, wg.Arm("lion", "grid", -1, 0.25, seed), 2.0 + noise)  # lr*/2's best warm-up
        _finish(wg, tmp_path, wg.Arm("lion", "closed", -1, 0.0, seed), 2.03 + noise)
        _finish(wg, tmp_path, wg.Arm("lion", "grid", 0, wg.TWIN, seed), 2.005 + 50 * noise)  # floor 0.005
        _finish(wg, tmp_path, wg.Arm("lion", "closed", 0, 0.0, seed), 2.1)
        undecided = {"branch": "not yet", "by": "fit"}
        for k in (-1, 0):
            path = wg.result_path(tmp_path, wg.Arm("lion", "closed", k, 0.0, seed))
            path.write_text(wg.json.dumps({**wg.json.loads(path.read_text()), "decision": undecided}))
    results = wg.collect(tmp_path)
    table, refs = wg.summarise(results, [0, 1])
    lines = "\n".join(wg.goals(table, refs, results))
    assert "in 0 of 2 closed-loop runs" in lines  # lr*'s two, not the four beside it
    assert ("closed at 0.0005 (lr*·0.5): 2.0350 over seeds [0, 1]; vs this LR's best warm-up (w0.25, 2.0050) "
            "within 1 σ: MISSED (+4.2 σ)") in lines and "paired +0.0300 (s0 +0.0300, s1 +0.0300); no warm-up here: 2.5000" in lines
    assert "lr*·2)" not in lines  # not run at 2·lr*: no line


def test_goals_use_the_best_grid_point_and_a_sigma_floored_by_the_twin_spread(tmp_path, monkeypatch):
    wg = load_warmup_grid(monkeypatch)
    for seed, noise in enumerate((0.0, 0.002, -0.002)):  # seed σ 0.002 at every point
        for k, w, loss in ((0, 0.0, 2.00), (0, 0.1, 1.90), (1, 0.1, 1.95)):
            _finish(wg, tmp_path, wg.Arm("muon", "grid", k, w, seed), loss + noise)
        _finish(wg, tmp_path, wg.Arm("muon", "grid", 0, wg.TWIN, seed), 2.02 + noise)  # twin spread 0.02
        _finish(wg, tmp_path, wg.Arm("muon", "closed", 0, 0.0, seed), 1.93 + noise)
        _finish(wg, tmp_path, wg.Arm("muon", "practical", 0, 0.0, seed), 1.95 + noise)
        _finish(wg, tmp_path, wg.Arm("muon", "fitted", 0, 0.0, seed), math.nan, "refused")
        if seed == 1:  # a measured peak that diverged on one seed
            _finish(wg, tmp_path, wg.Arm("muon", "own_peak", None, 0.0, seed), math.inf, "diverged")
        else:
            _finish(wg, tmp_path, wg.Arm("muon", "own_peak", None, 0.0, seed), 1.95 + noise)
    results = wg.collect(tmp_path)
    lines = "\n".join(wg.goals(*wg.summarise(results, [0, 1, 2]), results))
    assert "**muon**: scan open, every verdict open" in lines and "MISSED (+" not in lines
    assert ("closed: 1.9300 over seeds [0, 1, 2] against the reference's 1.9000 (3 seed(s) in all, mean 1.9300; "
            "max lr 0.02) vs reference within 1 σ: open (scan open)") in lines
    assert "closed_step: open (not run on these seeds yet)" in lines  # an arm with no run is named, not dropped
    assert "fitted: open (scan open) (refused on 3 of 3 seed(s)" in lines and "own-peak vs" not in lines
    _scan(wg, tmp_path, "muon", 0, seeds=(0, 1, 2))  # k = 0 is the scan's best: lr* = 0.02
    results = wg.collect(tmp_path)
    lines = "\n".join(wg.goals(*wg.summarise(results, [0, 1, 2]), results))
    assert "**muon**: reference open (6 of 15 grid points ran, on 3 seed(s) all share)" in lines  # not from part of it
    _grid(wg, tmp_path, "muon", 0, (0, 1, 2))
    results = wg.collect(tmp_path)
    table, refs = wg.summarise(results, [0, 1, 2])
    ref = refs["muon"]
    assert ref["best"] == pytest.approx(1.90) and ref["best_lr"] == pytest.approx(0.02) and ref["shared"] == [0, 1, 2]
    assert ref["twin_floor"] == pytest.approx(0.02) and ref["sigma"] == pytest.approx(0.02)
    # three points with seed σ 0.002 (0, ±0.002) and twelve at 2.5 on every seed (σ 0): median 0
    assert (ref["grid_seed_sigma"], ref["grid_seed_points"]) == (pytest.approx(0.0), 15)
    lines = "\n".join(wg.goals(table, refs, results))
    assert "the grid's points have a median seed σ of 0.0000 over 15 point(s) with 2 seeds or more" in lines
    assert "closed: 1.9300 over seeds [0, 1, 2] against the reference's 1.9000" in lines
    assert "vs reference within 1 σ: MISSED (+1.5 σ)" in lines
    # paired on each seed with the reference point: +0.03 everywhere, where the means' σ is 0.02
    assert "paired +0.0300 (s0 +0.0300, s1 +0.0300, s2 +0.0300)" in lines
    assert "own_peak: inf" in lines and "(s0 +0.0500, s1 this arm diverged, s2 +0.0500)" in lines
    assert "vs reference within 2 σ: MISSED (diverged)" in lines
    assert ref["per_seed"] == pytest.approx({0: 1.90, 1: 1.902, 2: 1.898})
    assert "closed loop (closed) within 1 σ of practical or better: met (-1.0 σ)" in lines
    assert "fitted: MISSED (refused on 3 of 3 seed(s)" in lines and lines.count("diverged") == 2  # own_peak's only


def test_the_reference_is_a_grid_point_ranked_on_the_seeds_every_point_ran(tmp_path, monkeypatch):
    """The twin (a noise probe) is never the reference, a point is not chosen for a seed the others
    lack, and with one seed the σ is not measured: every verdict stays open."""
    wg = load_warmup_grid(monkeypatch)
    _scan(wg, tmp_path, "lion", 0)
    for w, loss in ((0.0, 1.70), (0.1, 1.71), (wg.TWIN, 1.60)):
        _finish(wg, tmp_path, wg.Arm("lion", "grid", 0, w, 0), loss)
    _finish(wg, tmp_path, wg.Arm("lion", "grid", 0, 0.1, 1), 1.60)  # lucky: w0 has no seed 1 yet
    _finish(wg, tmp_path, wg.Arm("lion", "closed", 0, 0.0, 0), 1.72)
    results = wg.collect(tmp_path)
    assert wg.summarise(results, [0, 1])[1]["lion"]["best_label"] is None  # 6 of the 15 points: no best yet
    _grid(wg, tmp_path, "lion", 0, (0,))
    results = wg.collect(tmp_path)
    table, refs = wg.summarise(results, [0, 1])
    ref = refs["lion"]
    assert (ref["best_label"], ref["best"], ref["shared"]) == ("grid w0", pytest.approx(1.70), [0])
    assert math.isnan(ref["seed_sigma"]) and math.isnan(ref["sigma"]) and ref["twin_floor"] == pytest.approx(0.1)
    lines = "\n".join(wg.goals(table, refs, results))
    assert ("closed: 1.7200 over seeds [0] against the reference's 1.7000 (1 seed(s) in all, mean 1.7200; max lr "
            "0.001) vs reference within 1 σ: open (σ not measured yet; difference +0.0200)") in lines
    _finish(wg, tmp_path, wg.Arm("muon", "closed", 0, 0.0, 0), 1.72)  # an optimizer with no grid point yet
    results = wg.collect(tmp_path)
    lines = "\n".join(wg.goals(*wg.summarise(results, [0, 1]), results))
    assert "**muon**: reference open (no grid point on these seeds yet), every verdict open" in lines


def test_paired_differences_name_what_they_could_not_compare(monkeypatch):
    wg = load_warmup_grid(monkeypatch)
    diff, said = wg.paired({0: 1.0}, {1: 1.0})
    assert math.isnan(diff) and said == "paired: no seed in common"
    diff, said = wg.paired({0: math.inf, 1: 1.2}, {0: 1.0, 1: 1.0})
    assert diff == math.inf and said == "paired +inf (s0 this arm diverged, s1 +0.2000)"
    diff, said = wg.paired({0: 1.0, 1: 1.2, 2: math.inf}, {0: math.inf, 1: 1.0, 2: math.inf})  # the other lost s0
    assert diff == -math.inf and said == "paired -inf (s0 the other diverged, s1 +0.2000, s2 both diverged)"
    assert wg._verdict(diff, 0.01) == "met (the other diverged)"
    diff, said = wg.paired({0: 1.0, 1: math.inf}, {0: math.inf, 1: 1.0})  # each lost one: no verdict
    assert math.isnan(diff) and said.startswith("paired undecided")


def test_a_timing_missed_on_a_loaded_machine_is_not_measured_but_bytes_and_met_times_stand(monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    import fit_speed
    import machine
    import probe_overhead

    load = [1.0]
    monkeypatch.setattr(machine.os, "getloadavg", lambda: (load[0], 0.0, 0.0))
    monkeypatch.setattr(machine.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    watch = machine.LoadWatch()
    assert watch.cores == 2 and not watch.loaded and "(loaded)" not in watch.describe()
    load[0] = 2.5
    assert watch.loaded and watch.describe() == "load average up to 2.5 on 2 cores (loaded)"
    load[0] = 0.5
    assert watch.loaded and watch.peak == 2.5  # once loaded, the run's timings stay suspect
    monkeypatch.setattr(probe_overhead, "WATCH", watch)
    assert probe_overhead.verdict(2.6, False).endswith("not measured (loaded)")
    assert probe_overhead.verdict(4.5, False, timed=False).endswith("MISS")  # bytes: load changes nothing
    assert probe_overhead.verdict(2.2, True).endswith("ok")
    assert fit_speed.verdict(40.0, 30.0, loaded=True).startswith("not measured (loaded; 1.33×")
    assert fit_speed.verdict(7.0, 30.0, loaded=True) == "met (0.23× the 30 s goal)"
    assert fit_speed.verdict(40.0, 30.0, loaded=False) == "MISSED (1.33× the 30 s goal)"


def test_a_result_counts_only_under_its_kinds_present_design(monkeypatch):
    wg = load_warmup_grid(monkeypatch)
    assert wg.current({"kind": "closed_step", "design": wg.design_of("closed_step")})
    assert not wg.current({"kind": "closed_step", "design": "4, stability 4"})  # the test's slow steps were taken
    assert wg.current({"kind": "grid", "design": None})  # the decision rule does not drive the grid
    assert not wg.current({"kind": "record", "design": 4})  # the recorded run's fit feeds the fitted arms
    assert wg.current({"kind": "record", "design": f"fit {wg.FIT_RULE}"})
    for kind in wg.ADAPTIVE:  # the schedule's version reaches every arm AdaptiveWarmup drives
        assert not wg.current({"kind": kind, "design": 4}) and f"schedule {wg.SCHEDULE}" in wg.design_of(kind)


def test_a_run_folder_holds_one_devices_results(tmp_path, monkeypatch, capsys):
    wg = load_warmup_grid(monkeypatch)
    monkeypatch.setattr(wg, "REPO", tmp_path)

    def main(*args):
        monkeypatch.setattr(sys, "argv", ["warmup_grid.py", "--summary-only", "--out", str(tmp_path / "runs"), *args])
        wg.main()

    main("--device", "cuda")  # a fresh folder takes any device
    assert "no finished runs yet" in capsys.readouterr().out
    _finish(wg, tmp_path / "runs", wg.Arm("lion", "grid", 0, 0.0, 0), 1.7)  # written before results named a device
    assert wg.recorded(tmp_path / "runs", "device") == {"cpu"} and wg.recorded(tmp_path / "runs", "task") == {"lm"}
    with pytest.raises(SystemExit) as refused:
        main("--device", "cuda")
    assert refused.value.code == 2 and "holds results run on cpu; give --device cuda its own --out" in capsys.readouterr().err
    with pytest.raises(SystemExit) as refused:  # two tasks' losses must not meet in one table either
        main("--task", "markov")
    assert refused.value.code == 2 and "holds results run on lm; give --task markov its own --out" in capsys.readouterr().err


def test_held_out_seeds_get_their_own_report(tmp_path, monkeypatch, capsys):
    wg = load_warmup_grid(monkeypatch)
    monkeypatch.setattr(wg, "REPO", tmp_path)
    (tmp_path / "reports").mkdir()
    for seed in (0, wg.HELD_OUT):
        for w, loss in ((0.0, 2.0), (0.1, 1.9)):
            _finish(wg, tmp_path / "runs", wg.Arm("lion", "grid", 0, w, seed), loss + seed / 1000)
        _finish(wg, tmp_path / "runs", wg.Arm("lion", "closed_progress", 0, 0.0, seed), 1.95)  # its rule saw seed 20
    for offset in (0, wg.HELD_OUT):
        monkeypatch.setattr(sys, "argv", ["warmup_grid.py", "--summary-only", "--out", str(tmp_path / "runs"),
                                          "--seeds", "1", "--seed-offset", str(offset)])
        wg.main()
    dev, held = (tmp_path / "reports" / f"warmup_grid{s}.md" for s in ("", "_heldout"))
    assert "reference = grid w0.1 at lr 0.001: 1.9000" in dev.read_text()
    assert "closed_progress: 1.9500 over seeds [0]" in dev.read_text()
    assert (f"2 runs on the evaluated seeds [{wg.HELD_OUT}]: 2 finished, 0 diverged, 0 refused (never trained). "
            f"closed_progress leaves out seeds [{wg.HELD_OUT}, {wg.HELD_OUT + 1}]") in held.read_text()
    assert "closed_progress: open (not run on these seeds yet)" in held.read_text()
    assert "in 0 of 0 closed-loop runs" in held.read_text()
    assert f"reference = grid w0.1 at lr 0.001: {1.9 + wg.HELD_OUT / 1000:.4f}" in held.read_text()


def test_results_of_the_repositorys_run_folders_are_kept_where_they_are_committed(tmp_path, monkeypatch):
    """runs/ is not committed and a new checkout starts without it: an arm's result (and a recorded
    run's fit) lives in benchmarks/results/NAME, and every reader looks there."""
    wg = load_warmup_grid(monkeypatch)
    monkeypatch.setattr(wg, "REPO", tmp_path)
    out, arm = tmp_path / "runs" / "warmup_grid", wg.Arm("lion", "grid", -1, 0.0, 0)
    assert wg.result_path(out, arm) == tmp_path / "benchmarks/results/warmup_grid/lion/grid-w0-lr0.0005/seed-0.json"
    assert wg.results_dir(tmp_path / "elsewhere") == tmp_path / "elsewhere" / "results"
    record = wg.needs(wg.Arm("lion", "fitted", -1, 0.0, 0))
    assert wg.fit_path(out, record) == tmp_path / "benchmarks/results/warmup_grid/lion/record-lr0.0005/seed-100.fit.json"
    _finish(wg, out, arm, 1.7)
    wg.fit_path(out, record).parent.mkdir(parents=True)
    wg.fit_path(out, record).write_text("{}")  # a recorded run's fit is not a result
    assert list(wg.collect(out).name) == [arm.name] and wg.result_of(out, arm)["val_loss"] == 1.7


def test_a_parameter_free_arm_reports_the_largest_step_it_took(monkeypatch):
    """Prodigy's d grows while its cosine schedule's lr falls, and DoG's η can fall: the arm's max LR is
    the largest d·lr (or η) over the steps, not the last d times the initial lr."""
    wg = load_warmup_grid(monkeypatch)
    group = {"d": 1e-3, "lr": 1.0}

    class Halving:
        def step(self):
            group["lr"] *= 0.5

    tracker = wg.LargestStep(Halving(), SimpleNamespace(param_groups=[group]))  # the first step: 1e-3
    for d in (4e-3, 5e-3):  # the optimizer stores the next step's d, then the schedule halves lr: 2e-3, 1.25e-3
        group["d"] = d
        tracker.step()
    assert tracker.largest == pytest.approx(2e-3)
    dog = SimpleNamespace(param_groups=[{"eta": [0.3]}, {"eta": [0.5]}])
    assert wg.effective_lr(dog) == pytest.approx(0.5) and wg.effective_lr(SimpleNamespace(param_groups=[{}])) is None


def test_the_ramp_pilot_ramps_to_its_peak_probes_every_step_and_reruns_only_what_did_not_end(tmp_path, monkeypatch):
    """benchmarks/ramp_pilot.py: the LR rises linearly to the peak over the whole pilot (peak·(k+1)/STEPS
    at step k) and every step carries the secant probe; a finished run is kept, while one left "running"
    (a killed session) or run at another size is trained again."""
    from smoothprobe.store import load_run

    trainer_module = importlib.import_module("smoothprobe.train")  # `smoothprobe.train` is also a function
    monkeypatch.syspath_prepend(str(SCRIPT.parent))  # as when run as a script: it imports warmup_grid
    spec = importlib.util.spec_from_file_location("ramp_pilot", SCRIPT.parent / "ramp_pilot.py")
    ramp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ramp)
    monkeypatch.setattr(ramp, "STEPS", 4)
    path = ramp.run(tmp_path, "lion", 3.0, 0)
    steps = load_run(path).steps
    assert ramp.lr_star("lion") == pytest.approx(5e-4)  # the grid's scanned lr*, from its committed results
    peak = ramp.lr_star("lion") * 3.0
    assert steps.lr.tolist() == pytest.approx([peak * (k + 1) / 4 for k in range(4)])
    assert steps.secant_K.notna().all() and (steps.secant_K > 0).all()

    def trained_again(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr(trainer_module, "build", trained_again)
    assert ramp.run(tmp_path, "lion", 3.0, 0) == path
    info = path / "run.json"
    stored = json.loads(info.read_text())
    info.write_text(json.dumps({**stored, "status": "running"}))
    with pytest.raises(AssertionError, match="trained again"):
        ramp.run(tmp_path, "lion", 3.0, 0)
    info.write_text(json.dumps(stored))
    monkeypatch.setattr(ramp, "STEPS", 5)
    with pytest.raises(AssertionError, match="trained again"):
        ramp.run(tmp_path, "lion", 3.0, 0)


def test_the_progress_tests_second_task_is_judged_as_registered(tmp_path, monkeypatch):
    """second_task.progress_transfer: the right answer needs the same end ahead on every seed, the test must be
    right on 2 of 3 seeds and its closed loop within the better end's mean + seed σ."""
    from smoothprobe.schedule.decision import progress_trial

    tests = load_benchmark(monkeypatch, "second_task")
    wg = sys.modules["warmup_grid"]
    monkeypatch.setattr(tests, "FOLDER", tmp_path)
    assert tests.progress_transfer("adamw") is None  # the scan is open
    _scan(wg, tmp_path, "adamw", 0)
    none, warm = {0: 2.00, 1: 2.02, 2: 2.04}, {0: 1.95, 1: 1.96, 2: 1.99}  # 25 % ahead on every seed
    for seed in (0, 1, 2):
        _finish(wg, tmp_path, wg.Arm("adamw", "grid", 0, 0.0, seed), none[seed])
        _finish(wg, tmp_path, wg.Arm("adamw", "grid", 0, 0.25, seed), warm[seed])
    assert tests.progress_transfer("adamw")["answer"] == "warm-up" and tests.progress_transfer("adamw")["transfers"] is None
    for seed, (end, closed) in enumerate(((3.0, 1.96), (3.0, 1.97), (4.5, 2.00))):  # drops 40 %, 40 %, 10 %
        arm = wg.Arm("adamw", "closed_progress", 0, 0.0, seed)
        _finish(wg, tmp_path, arm, closed)
        result = json.loads(wg.result_path(tmp_path, arm).read_text())
        trial = progress_trial([{"loss": 5.0}] * 45 + [{"loss": end}] * 5)
        result.update(task_f_star=1.0, start_tests=[{"by": "progress test", "branch": "not yet" if end < 4 else
                                                     "no-warmup", "trial": trial}])
        wg.result_path(tmp_path, arm).write_text(json.dumps(result))
    t = tests.progress_transfer("adamw")
    assert t["calls"] == {0: "warm-up", 1: "warm-up", 2: "none"} and t["right"] == 2
    assert t["drops"][0] == pytest.approx(0.4) and t["gap_drops"][0] == pytest.approx(0.5)
    # mean closed 1.9767 against 1.9667 + σ 0.0208: within
    assert t["within"] and t["transfers"] and t["lr_star"] == pytest.approx(wg.GUESS["adamw"])
    _finish(wg, tmp_path, wg.Arm("adamw", "grid", 0, 0.0, 1), math.inf, "diverged")  # a diverged end loses its seed
    assert tests.progress_transfer("adamw")["answer"] == "warm-up"
    _finish(wg, tmp_path, wg.Arm("adamw", "closed_progress", 0, 0.0, 2), math.inf, "diverged")
    t = tests.progress_transfer("adamw")  # seed 2's result kept no start test: unread, no verdict
    assert t["calls"][2] == "unread" and t["right"] is None and t["within"] is None and t["transfers"] is None
    arm = wg.Arm("adamw", "closed_progress", 0, 0.0, 2)
    result = json.loads(wg.result_path(tmp_path, arm).read_text())
    result["start_tests"] = [{"by": "progress test", "branch": "not yet",
                              "trial": progress_trial([{"loss": 5.0}] * 45 + [{"loss": 3.0}] * 5)}]
    wg.result_path(tmp_path, arm).write_text(json.dumps(result))  # and no f*: no gap to read
    t = tests.progress_transfer("adamw")
    assert math.isnan(t["gap_drops"][2]) and t["right"] == 3 and t["within"] is False and t["transfers"] is False


def test_the_closed_loops_on_the_second_task_are_judged_against_the_better_end(tmp_path, monkeypatch):
    """second_task.loop_transfer: a closed loop transfers on an optimizer where its mean is within the
    better end's mean + that end's seed σ (w0 here: 1.90, 1.92, 1.94, σ 0.02); a diverged run fails it,
    and own_peak's runs are the ones given no LR."""
    tests = load_benchmark(monkeypatch, "second_task")
    wg = sys.modules["warmup_grid"]
    monkeypatch.setattr(tests, "FOLDER", tmp_path)
    assert tests.loop_transfer("lion", "own_peak") is None  # the scan is open
    _scan(wg, tmp_path, "lion", 0)
    for seed, (none, warm) in enumerate(((1.90, 2.0), (1.92, 2.1), (1.94, 2.0))):
        _finish(wg, tmp_path, wg.Arm("lion", "grid", 0, 0.0, seed), none)
        _finish(wg, tmp_path, wg.Arm("lion", "grid", 0, 0.25, seed), warm)
    for seed, (mine, theirs) in enumerate(((1.91, 1.90), (1.93, 1.99), (1.96, 1.99))):
        if seed == 2:  # a run still missing: no verdict yet
            assert tests.loop_transfer("lion", "own_peak")["within"] is None
        _finish(wg, tmp_path, wg.Arm("lion", "own_peak", None, 0.0, seed), mine)
        _finish(wg, tmp_path, wg.Arm("lion", "closed", 0, 0.0, seed), theirs)
    mine, theirs = tests.loop_transfer("lion", "own_peak"), tests.loop_transfer("lion", "closed")
    assert mine["better"] == "w0" and mine["paired"] == pytest.approx({0: 0.01, 1: 0.01, 2: 0.02})
    assert mine["within"] is True and theirs["within"] is False  # means 1.9333 and 1.96 against 1.92 + 0.02
    assert mine["peak_lr"][0] is None and theirs["peak_lr"][0] == pytest.approx(wg.GUESS["lion"])
    _finish(wg, tmp_path, wg.Arm("lion", "own_peak", None, 0.0, 2), math.inf, "diverged")
    assert tests.loop_transfer("lion", "own_peak")["within"] is False


@pytest.mark.slow  # about 15 s idle: 600 small steps
def test_a_markov_arm_records_its_task_its_f_star_and_its_progress_test(tmp_path, monkeypatch):
    wg = load_warmup_grid(monkeypatch)
    full = wg.base_config
    monkeypatch.setattr(wg, "base_config", lambda quick, device, task="lm": wg.dataclasses.replace(
        full(True, device, task), steps=600, batch_size=2, seq_len=16, eval_every=300))
    arm = wg.Arm("lion", "closed_progress", 0, 0.0, 0)
    wg.run_arm(arm, tmp_path, True, "cpu", "markov")
    result = json.loads(wg.result_path(tmp_path, arm).read_text())
    assert result["task"] == "markov" and result["status"] == "finished"
    from smoothprobe.tasks.markov import MarkovTask

    assert result["task_f_star"] == pytest.approx(MarkovTask(seq_len=16).f_star)  # the chain's entropy rate
    (test,) = result["start_tests"]
    assert test["by"] == "progress test" and test["trial"]["steps"] == 50 and len(test["trial"]["last"]) == 5


def load_benchmark(monkeypatch, name):
    """A benchmark script beside warmup_grid.py (which it imports), loaded as a module."""
    load_warmup_grid(monkeypatch)
    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location(name, SCRIPT.parent / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_second_tasks_committed_loop_verdicts_are_the_ones_its_docstring_states(monkeypatch):
    """benchmarks/second_task.py on the committed markov results: which closed loop is within where,
    and the docstring's verdicts and misses, from the same numbers."""
    tests = load_benchmark(monkeypatch, "second_task")
    within = {kind: {opt: tests.loop_transfer(opt, kind)["within"] for opt in ("adamw", "lion", "muon", "normsgd")}
              for kind in tests.LOOPS}
    assert within["own_peak"] == {"adamw": False, "lion": False, "muon": True, "normsgd": False}
    assert within["closed"] == within["closed_exact"] == {"adamw": True, "lion": True, "muon": True, "normsgd": False}
    assert within["closed_window"] == within["closed"]
    window = {opt: tests.loop_transfer(opt, "closed_window") for opt in ("muon", "normsgd")}
    assert set(window["normsgd"]["branch"].values()) == {"no-warmup"}
    muon = ", ".join(f"{d:+.3f}" for d in window["muon"]["paired"].values()).replace("-", "−")
    assert f"{muon} against 25 %; `closed`" in " ".join(tests.__doc__.split())
    doc = " ".join(tests.__doc__.split())
    assert "Neither transfers" in doc and "so `closed_exact` does not transfer" in doc
    behind = sorted(round(d, 2) for d in tests.loop_transfer("normsgd", "closed_exact")["paired"].values())
    assert behind == [0.65, 0.69, 0.76] and "lost 0.76, 0.69 and 0.65" in doc  # design 6: no fit decided
    adamw = tests.loop_transfer("adamw", "own_peak")["paired"].values()
    assert f"AdamW is behind by {min(adamw):.3f}-{max(adamw):.3f} on every seed" in doc


def test_the_start_tests_committed_verdicts_follow_from_their_readings_and_match_the_docstring(monkeypatch):
    """benchmarks/start_tests.py: every committed verdict is its rule applied to its own readings, the
    counts the docstring (and docs/design.md §5) quote are the committed ones on each rule's own seeds,
    and a reading runs end to end."""
    from smoothprobe.schedule.decision import PROGRESS_DROP

    tests = load_benchmark(monkeypatch, "start_tests")
    second = sys.modules["second_task"]
    found = json.loads(tests.RESULTS.read_text())
    lm = [r for r in found.values() if r.get("task", "lm") == "lm"]  # the second task's: second_task.py
    assert len(lm) == 80 and {r["seed"] for r in lm} == set(tests.SEEDS)
    for r in found.values():
        assert r["a"] == (r["peak"] <= 2.0 * r["start_best"]) and r["b"] == (r["late_best"] >= r["peak"])
        assert r["c"] == (r["scale_ratio"] * 1.1 >= 1.0) and r["settled"] == (r["a"] and r["b"] and r["c"])
        assert r["progress"] == (r["drop"] < PROGRESS_DROP)

    def calls(rule):
        return {opt: sum(found[f"{opt}-seed{s}"][rule] for s in tests.RULES[rule])
                for opt in ("adamw", "lion", "muon", "normsgd")}

    assert calls("settled") == {"adamw": 0, "lion": 6, "muon": 10, "normsgd": 1}
    assert calls("progress") == {"adamw": 0, "lion": 10, "muon": 10, "normsgd": 0}
    doc = " ".join(tests.__doc__.split())
    for opt, right in (("AdamW", 10), ("Muon", 10), ("normalised SGD", 9), ("Lion", 6)):
        assert f"{opt} right {right} of 10" in doc or f"{opt} {right} of 10" in doc
    for opt, name in (("adamw", "AdamW"), ("normsgd", "normalised SGD"), ("lion", "Lion"), ("muon", "Muon")):
        t = second.progress_transfer(opt)  # the second task, from the committed markov results
        assert f"{name} right on {t['right']} of 3" in doc or f"{name} (right on {t['right']} of 3" in doc
        assert t["transfers"] == (opt in ("lion", "muon")) and all(call == "none" for call in t["calls"].values())
    closest = min(r["drop"] for r in lm if r["optimizer"] == "normsgd" and r["seed"] in tests.RULES["progress"])
    assert f"at {closest:.1%}".replace("%", " %") in doc
    monkeypatch.setattr(tests, "WINDOW", 20)  # the fewest steps the scale's ratio reads (2 × SETTLE_ROWS)
    monkeypatch.setattr(tests, "LATE", (15, 19))
    r = tests.reading("lion", 0)
    assert r["peak"] == pytest.approx(5e-4) and 0 < r["start_best"] < 1 and 0 < r["late_best"] < 1
    assert r["scale_ratio"] == pytest.approx(1.0, abs=1e-3)  # Lion's sign step: the same size at every LR
    assert math.isnan(r["drop"]) and not r["progress"]  # 20 steps are too few for the progress test


def test_the_step_limit_checks_committed_verdicts_are_the_ones_its_docstring_states(monkeypatch):
    """benchmarks/step_limit.py on the committed results: the two start-test limits do not replace the fits
    alone and the window test does (by the registered rule), with the means its docstring quotes; and a
    limit-1 verdict needs upward curvature where limit 2 reads a downward step as room."""
    limits = load_benchmark(monkeypatch, "step_limit")
    rows, verdicts = limits.judge()
    assert verdicts == {"limit 2": False, "limit 1": False, "window": True}
    cells = {(r.split(" | ")[0].strip("| "), r.split(" | ")[1]): r for r in rows}
    assert "| 1.9230 | 1.9722 (2/2 none) | 1.9722 (2/2 none) |" in cells[("normsgd", "lr*·2^-1")]
    assert cells[("muon", "lr*·2^-1")].startswith("| muon | lr*·2^-1 | 2.0226 |") and "| 1.7160 |" in cells[("muon", "lr*·2^-1")]
    doc = " ".join(limits.__doc__.split())
    for said in ("(1.972) is 0.049 behind the fits alone (1.923", "Muon at lr*/2 1.716 against 2.023",
                 "at lr* 1.632 against 1.662", "2.036 against 1.838"):
        assert said in doc
    window, verdict = limits.window_checks(verdicts["window"])
    assert verdict is True and "It passes, as predicted, and is the `--pilot` default" in doc
    muon = next(row for row in window if row.startswith("| muon |"))
    assert "| -0.0070 | -0.0717 | -0.0393 (0.0098) | True |" in muon and "| +0.0088 |" in muon
    down = {"peak": 0.1, "rows": [{"lr": 0.01, "secant_slope": 1.0, "secant_curv": -1.0}] * 3}
    assert limits.passes(down, 2.0) and not limits.passes(down, 1.0)


def test_no_relative_update_reading_separates_the_runs_that_need_a_warm_up(monkeypatch):
    """benchmarks/relative_update.py on the committed readings: no threshold on any reading puts every
    cell the grid says needs a warm-up above every cell that needs none, with the numbers its docstring
    quotes; and Lion's first update moves each matrix by lr·√n, within lr·wd·‖W‖ (a sign step)."""
    relative = load_benchmark(monkeypatch, "relative_update")
    rows, verdicts = relative.table()
    assert verdicts == dict.fromkeys(relative.READINGS, False)
    said = {tuple(r.split(" | ")[:3]): float(r.split(" | ")[3]) for r in rows}
    assert {k[2] for k in said if k[0] in ("| lion", "| muon")} == {"none"}
    assert {k[2] for k in said if k[0] in ("| adamw", "| normsgd")} == {"warm-up"}
    doc = " ".join(relative.__doc__.split())
    assert f"by {said[('| normsgd', 'lr*·2^-1', 'warm-up')]:.3f} of its norm for normalised SGD at lr*/2" in doc
    calm = [v for k, v in said.items() if k[2] == "none"]
    assert f"against {min(calm):.3f}-{max(calm):.2f} for Lion and Muon" in doc
    assert relative.separates([("warm-up", 2.0), ("none", 1.0)]) and not relative.separates([("warm-up", 1.0), ("none", 2.0)])

    monkeypatch.setattr(relative, "STEPS", 1)
    k = relative.warmup_grid.scanned_exponent("lion")
    (first,) = relative.relative_updates("lion", k, 0)
    arm = relative.warmup_grid.Arm("lion", "grid", k, 0.0, 0)
    with relative.warmup_grid.scratch_trainer(arm) as trainer:
        lr, wd = trainer.config.lr, trainer.optimizer.param_groups[0]["weight_decay"]
        for name, p in trainer.model.named_parameters():
            if p.ndim >= 2:
                norm = float(p.norm())
                # float32 rounding of the norms: 1e-4 relative
                assert first[name] == pytest.approx(lr * math.sqrt(p.numel()) / norm, rel=1e-4, abs=lr * wd)


def test_the_horizon_table_is_the_committed_readings_and_its_docstring_quotes_them(monkeypatch):
    """benchmarks/horizon.py on the committed readings: the no-warm-up run leads over steps 50-99 in every
    cell but AdamW at 2·lr*, and falls behind for good from the steps its docstring gives."""
    horizon = load_benchmark(monkeypatch, "horizon")
    monkeypatch.setattr(horizon, "reading", lambda *args: None)  # the committed readings only
    rows = {tuple(r.split(" | ")[:2]): r.split(" | ") for r in horizon.table()}
    assert len(rows) == 12
    early = {key: float(cells[3]) for key, cells in rows.items()}
    assert [key for key, lead in early.items() if lead > 0] == [("| adamw", "lr*·2^+1")]
    ahead = [-lead for lead in early.values() if lead < 0]
    doc = " ".join(horizon.__doc__.split())
    assert f"ahead by {min(ahead):.2f}-{max(ahead):.2f}" in doc
    behind = {key: cells[-1].strip(" |") for key, cells in rows.items()}
    assert [behind[("| adamw", f"lr*·2^{d}")] for d in ("-1", "+0")] == ["750", "350"]
    assert [behind[("| normsgd", f"lr*·2^{d}")] for d in ("-1", "+0", "+1")] == ["450", "300", "100"]
    assert all(behind[key] == "nan" for key in behind if key[0] in ("| lion", "| muon"))
    assert horizon.behind_from([-1.0, 1.0, -1.0, 1.0, 1.0]) == 3 * horizon.BLOCK
    assert math.isnan(horizon.behind_from([1.0, -1.0]))


def test_readings_are_taken_once_kept_at_once_and_none_is_not_kept(tmp_path, monkeypatch):
    """warmup_grid.Readings: a reading is taken on the first ask only and is in the file before the next;
    a None (nothing to read yet) is asked again."""
    grid = load_warmup_grid(monkeypatch)
    calls = []

    def take(value):
        calls.append(value)
        return None if value is None else {"v": value}

    readings = grid.Readings(tmp_path / "r.json")
    assert readings.get("a", take, 1) == {"v": 1} and readings.get("a", take, 2) == {"v": 1}
    assert json.loads((tmp_path / "r.json").read_text()) == {"a": {"v": 1}}
    assert readings.get("b", take, None) is None and readings.get("b", take, None) is None
    assert grid.Readings(tmp_path / "r.json").get("a", take, 3) == {"v": 1} and calls == [1, None, None]


def test_the_fresh_seeds_check_reads_as_its_docstring_says(monkeypatch):
    """benchmarks/fresh_seeds.py on the committed results: the registered check fails on Lion alone, with
    the numbers its outcome quotes."""
    fresh = load_benchmark(monkeypatch, "fresh_seeds")
    rows = {}
    for optimizer in fresh.warmup_grid.GUESS:
        row, rows[optimizer] = fresh.verdict(optimizer)
        if optimizer == "lion":
            cells = row.split(" | ")
            assert cells[1:4] == ["1.6862", "1.7536", "1.7033"]
    assert rows == {"adamw": True, "lion": False, "muon": True, "normsgd": True}
    doc = " ".join(fresh.__doc__.split())
    assert "the check fails, on Lion" in doc and "1.7033 against 1.6862 with no warm-up" in doc
