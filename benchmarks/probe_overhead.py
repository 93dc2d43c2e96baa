"""Cost of the probes on the tiny LLaMA (lm task, default batch), as ratios measured in one run.

Goals (issue 4): `cheap` preset <= 1.05x a bare step; secant and FD curvature extra cost <= 1.15x
one forward+backward; exact HVP <= 2.5x one gradient; `overhead=0.10` lands at 10 % +- 3 %;
memory the Recorder keeps <= 2 model-size buffers, its transient peak <= 2x a bare step's. FD and
HVP curvature are measured next to the secant (standard preset), whose gradient at x_{t+1} they
share: FD reuses it, the HVP reuses its create_graph backward; alone each pays for it. `/4`
takes the HVP over 4 row pieces of the batch (`--hvp-chunks 4`: a quarter of the graph's memory,
H·d from the secant's pieces). Variants run in lockstep (one step of each per round, order
rotated) so that load from other processes hits them alike; medians and standard deviations over
the rounds. The oracle section splits one HVP's time (math SDPA kernel, create_graph gradient,
double backward, pieces, forward-over-reverse); the memory section the peaks per HVP mode.

Run from the repository root: PYTHONPATH=. python benchmarks/probe_overhead.py [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import weakref
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from machine import LoadWatch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from smoothprobe.geometry import Geometry
from smoothprobe.probes.base import ProbeContext
from smoothprobe.probes.curv_fd import CurvFDProbe
from smoothprobe.probes.oracle import GradOracle
from smoothprobe.probes.pieces import piece_losses
from smoothprobe.train import TrainConfig, Trainer, build

VARIANTS: dict[str, dict | None] = {
    "bare": None,
    "cheap": {"preset": "cheap", "every": 10},
    "secant": {"probes": ["secant"], "every": 1},
    "secant+curv_fd": {"probes": ["secant", "curv_fd"], "every": 1},
    "secant+curv_hvp": {"probes": ["secant", "curv_hvp"], "every": 1},
    "secant+curv_hvp/4": {"probes": ["secant", "curv_hvp"], "every": 1, "hvp_chunks": 4},
    "curv_fd": {"probes": ["curv_fd"], "every": 1},
    "curv_hvp": {"probes": ["curv_hvp"], "every": 1},
}
COMPARISONS = [  # (variant, baseline, goal, what the goal is measured in units of)
    ("secant", "bare", 1.15, "forward+backward"),
    ("secant+curv_fd", "secant", 1.15, "forward+backward"),
    ("secant+curv_hvp", "secant", 2.5, "gradient"),
    ("secant+curv_hvp/4", "secant", 2.5, "gradient"),
    ("curv_fd", "bare", None, "forward+backward"),
    ("curv_hvp", "bare", None, "gradient"),
]


CHEAP_GOAL = 1.05
"""The cheap preset's step over a bare step (compared in blocks of its probing interval)."""


def rotate(jobs: list[tuple[str, Callable[[int], float]]], warmup: int, rounds: int,
           stop: Callable[[], bool] = lambda: False) -> dict[str, list[float]]:
    """Each job's seconds per step, one step of each per round with the order rotated (so that load
    from other processes hits them alike), after `warmup` rounds; ends early once `stop()` says so."""
    times: dict[str, list[float]] = {name: [] for name, _ in jobs}
    for step in range(warmup + rounds):
        if stop():
            break
        shift = step % len(jobs)
        for name, job in jobs[shift:] + jobs[:shift]:
            elapsed = job(step)
            if step >= warmup:
                times[name].append(elapsed)
    return times


def lockstep_figures(times: dict[str, list[float]]) -> tuple[float, list[float], dict[str, tuple[float, float]]]:
    """From `rotate`'s times (VARIANTS and "fb"): one forward+backward (median), the cheap preset's
    time over a bare step's in blocks of its interval, and each of COMPARISONS as (median, σ) of
    the variant's extra time per step over its baseline's, in forward+backward units."""
    fb, bare, every = statistics.median(times["fb"]), times["bare"], VARIANTS["cheap"]["every"]
    blocks = [sum(times["cheap"][i:i + every]) / sum(bare[i:i + every]) for i in range(0, len(bare) - every + 1, every)]
    extra = {}
    for name, base, _, _ in COMPARISONS:
        ratios = [(v - b) / fb for v, b in zip(times[name], times[base])]
        extra[name] = (statistics.median(ratios), statistics.stdev(ratios) if len(ratios) > 1 else float("nan"))
    return fb, blocks, extra


WATCH = LoadWatch()
"""The load since the start: a timing taken on a loaded machine is not a measurement (benchmarks/machine.py)."""


def verdict(value: float, ok: bool, timed: bool = True) -> str:
    """The figure and ok / MISS; a timing's miss on a loaded machine is 'not measured' (memory is bytes:
    load does not change it, so `timed=False` figures keep their MISS)."""
    if not ok and timed and WATCH.loaded:
        return f"{value:7.3f}   not measured (loaded)"
    return f"{value:7.3f}   {'ok' if ok else 'MISS'}"


def make_trainer(args: argparse.Namespace, root: Path, name: str, probes: dict | None) -> Trainer:
    """A fresh tiny-LLaMA trainer on the lm task (same seed for all, so same trajectory)."""
    config = TrainConfig(task="lm", model="tiny", optimizer=args.optimizer, steps=10**6,
                         eval_every=10**6, checkpoint_every=10**6, seed=0, probes=probes)
    return build(config, root / name, overwrite=True)


def forward_backward(trainer: Trainer, step: int) -> float:
    """Wall time of one training forward+backward (the reference unit), grads cleared after."""
    batch = trainer.task.train_batch(step)
    start = time.perf_counter()
    trainer.accumulate([batch])
    elapsed = time.perf_counter() - start
    trainer.optimizer.zero_grad(set_to_none=True)
    return elapsed


def lockstep(args: argparse.Namespace, root: Path) -> None:
    """Per-step costs of each probe variant against a bare step and one forward+backward."""
    trainers = {name: make_trainer(args, root, name, probes) for name, probes in VARIANTS.items()}
    jobs: list[tuple[str, Callable[[int], float]]] = [
        (name, lambda s, t=trainer: t.step(s)["step_time_s"]) for name, trainer in trainers.items()
    ]
    jobs.append(("fb", lambda s: forward_backward(trainers["bare"], s)))
    times = rotate(jobs, args.warmup, args.steps)
    fb, blocks, extra = lockstep_figures(times)
    cheap = statistics.median(blocks)
    print(f"lockstep: {args.steps} steps after {args.warmup} warm-up, optimizer {args.optimizer}; "
          f"median bare step {statistics.median(times['bare']) * 1e3:.1f} ms, "
          f"forward+backward {fb * 1e3:.1f} ms")
    print(f"  cheap preset (every 10) / bare step       {verdict(cheap, cheap <= CHEAP_GOAL)}  (goal <= "
          f"{CHEAP_GOAL}x, median of {len(blocks)} 10-step blocks)")
    for name, base, goal, unit in COMPARISONS:
        ratio, sigma = extra[name]
        figure = verdict(ratio, ratio <= goal) if goal is not None else f"{ratio:7.3f}       "
        print(f"  {name:<17} minus {base:<6} / one {unit:<16} {figure} +- {sigma:.3f}  "
              + (f"(goal <= {goal}x)" if goal is not None else "(alone: pays for g(x_{t+1}) itself)"))


def oracle_costs(args: argparse.Namespace, root: Path) -> None:
    """The exact HVP and the FD probe called directly, in units of one gradient."""
    trainer = make_trainer(args, root, "oracle", None)
    model, params = trainer.model, list(trainer.model.parameters())
    batch = [trainer.task.train_batch(0)]
    direction = [torch.randn_like(p) * 1e-3 for p in params]

    def oracle(hvp: str = "exact", chunks: int = 1) -> GradOracle:
        return GradOracle(model, lambda: trainer.micro_loss(model, batch), params, hvp=hvp,
                          pieces=piece_losses(partial(trainer.micro_loss, model), batch, chunks))

    geometry = Geometry("euclidean", [name for name, _ in model.named_parameters()])

    def fd_given_gradient() -> float:
        context = ProbeContext(oracle(), geometry, direction, direction)
        context.gradient()
        start = time.perf_counter()
        CurvFDProbe().measure(context)
        return time.perf_counter() - start

    def kept_graph_hvp() -> float:
        fresh = oracle()
        fresh.hvp(direction)
        start = time.perf_counter()
        fresh.hvp(direction)
        return time.perf_counter() - start

    def wall(run: Callable[[], object]) -> Callable[[], float]:
        def timed() -> float:
            start = time.perf_counter()
            run()
            return time.perf_counter() - start
        return timed

    def math_gradient() -> None:
        with sdpa_kernel(SDPBackend.MATH):
            oracle().loss_and_grad()

    jobs = {
        "gradient": wall(lambda: oracle().loss_and_grad()),
        "gradient_math": wall(math_gradient),
        "gradient_graph": wall(lambda: oracle().loss_and_grad(create_graph=True)),
        "hvp_fresh": wall(lambda: oracle().hvp(direction)),
        "hvp_pieces2": wall(lambda: oracle(chunks=2).hvp(direction)),
        "hvp_pieces4": wall(lambda: oracle(chunks=4).hvp(direction)),
        "hvp_kept": kept_graph_hvp,
        "hvp_forward": wall(lambda: oracle("forward").hvp(direction)),
        "fd_given_g": fd_given_gradient,
    }
    times: dict[str, list[float]] = {name: [] for name in jobs}
    for repeat in range(args.warmup + args.repeats):
        order = list(jobs.items())
        shift = repeat % len(order)
        for name, job in order[shift:] + order[:shift]:
            elapsed = job()
            if repeat >= args.warmup:
                times[name].append(elapsed)
    med = {name: statistics.median(values) for name, values in times.items()}
    g = med["gradient"]
    print(f"oracle: {args.repeats} interleaved repeats; one gradient (forward+backward) {g * 1e3:.1f} ms")
    print(f"  gradient, SDPA math kernel / gradient    {med['gradient_math'] / g:7.3f}   (the kernel double"
          " backward needs; the default CPU kernel is flash attention)")
    print(f"  create_graph gradient / gradient         {med['gradient_graph'] / g:7.3f}   (math kernel + the"
          " recorded backward: what the secant pays when an HVP probe is due)")
    fresh = med["hvp_fresh"] / g
    print(f"  exact HVP, fresh graph / gradient        {verdict(fresh, fresh <= 2.5)}  (goal <= 2.5x;"
          " graph build + one double backward)")
    print(f"  exact HVP, kept graph / gradient         {med['hvp_kept'] / g:7.3f}   (each further"
          " HVP on the same batch: Lanczos, trace)")
    forward = med["hvp_forward"] / g
    print(f"  forward-over-reverse HVP / gradient      {forward:7.3f}   (torch.func.jvp of the gradient: no"
          " kept graph; --hvp forward)")
    for chunks in (2, 4):
        pieced = med[f"hvp_pieces{chunks}"] / g
        print(f"  exact HVP in {chunks} row pieces / gradient     {pieced:7.3f}   (--hvp-chunks {chunks}: a graph"
              f" per piece, 1/{chunks} of the memory, nothing kept)")
    graph = (med["hvp_fresh"] - med["hvp_kept"]) / g
    print(f"  fresh minus kept / gradient              {graph:7.3f}   (building the create_graph"
          " gradient: in the Recorder it is the secant's gradient too)")
    fd = med["fd_given_g"] / g
    print(f"  FD curvature given g(x) / gradient       {verdict(fd, fd <= 1.15)}  (goal <= 1.15x;"
          " the secant's g(x_{t+1}) handed on through the ProbeContext)")


def budget(args: argparse.Namespace, root: Path) -> None:
    """Probe time over training time for a run with an overhead budget."""
    trainer = make_trainer(args, root, "budget", {"preset": args.budget_preset, "overhead": args.overhead})
    rows = [trainer.step(step) for step in range(args.warmup + args.budget_steps)][args.warmup:]
    probe = sum(r.get("probe_time_s", 0.0) for r in rows)
    total = sum(r["step_time_s"] for r in rows)
    probed = sum("probe_time_s" in r for r in rows)
    share = probe / (total - probe)
    ok = abs(share - args.overhead) <= 0.03
    print(f"budget: preset {args.budget_preset}, overhead={args.overhead}, {len(rows)} steps, "
          f"{probed} probed")
    print(f"  probe time / training time               {verdict(share, ok)}  (goal {args.overhead}"
          f" +- 0.03; training time = step time minus probe time)")
    print(f"  probe time / total step time             {probe / total:7.3f}")


class LiveBytes(TorchDispatchMode):
    """Bytes of tensor storage allocated inside the mode and still alive, and their peak."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._alive: set[int] = set()

    def _free(self, key: int, nbytes: int) -> None:
        if key in self._alive:
            self._alive.discard(key)
            self.live -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {id(t.untyped_storage()) for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for t in tree_leaves(out):
            if not isinstance(t, torch.Tensor):
                continue
            storage = t.untyped_storage()
            key = id(storage)
            if key in inputs or key in self._alive:
                continue
            self._alive.add(key)
            self.live += storage.nbytes()
            weakref.finalize(storage, self._free, key, storage.nbytes())
        self.peak = max(self.peak, self.live)
        return out


def memory(args: argparse.Namespace, root: Path) -> None:
    """Tensors the Recorder holds across optimizer.step(), and transient peaks, in model sizes."""
    bare = make_trainer(args, root, "mem-bare", None)
    model_bytes = sum(p.numel() * p.element_size() for p in bare.model.parameters())
    bare.step(0)
    with LiveBytes() as tracker:
        bare.step(1)
    bare_peak = tracker.peak / model_bytes
    print(f"memory: model {model_bytes / 2**20:.2f} MiB; new tensor storages counted by a dispatch"
          " mode (alive until freed), the Recorder's kept clones counted by their bytes")
    print(f"  bare training step, peak allocated       {bare_peak:7.3f}   model sizes"
          " (activations, grads, optimizer state: for comparison)")
    params = list(bare.model.parameters())
    oracle = GradOracle(bare.model, lambda: bare.micro_loss(bare.model, [bare.task.train_batch(2)]), params)
    with LiveBytes() as floor:
        oracle.hvp([torch.ones_like(p) for p in params])
    oracle.release()
    print(f"  one exact HVP alone, peak allocated      {floor.peak / model_bytes:7.3f}   model sizes"
          " (create_graph gradient on the math kernel + one double backward: the floor of HVP probes)")
    batch = [bare.task.train_batch(2)]
    for chunks in (2, 4):
        pieced = GradOracle(bare.model, lambda: bare.micro_loss(bare.model, batch), params,
                            pieces=piece_losses(partial(bare.micro_loss, bare.model), batch, chunks))
        with LiveBytes() as pieced_floor:
            pieced.hvp([torch.ones_like(p) for p in params])
        print(f"  one exact HVP in {chunks} row pieces, peak      {pieced_floor.peak / model_bytes:7.3f}   model sizes"
              f" (--hvp-chunks {chunks}: one piece's graph at a time)")
    forward = GradOracle(bare.model, lambda: bare.micro_loss(bare.model, batch), params, hvp="forward")
    with LiveBytes() as forward_floor:
        forward.hvp([torch.ones_like(p) for p in params])
    print(f"  one forward-over-reverse HVP, peak       {forward_floor.peak / model_bytes:7.3f}   model sizes"
          " (--hvp forward: the JVP of the gradient, nothing kept)")
    for preset, hvp, chunks in (("standard", "exact", 1), ("full", "exact", 1), ("full", "exact", 4),
                                ("full", "fd", 1), ("full", "forward", 1)):
        probed = make_trainer(args, root, f"mem-{preset}-{hvp}-{chunks}",
                              {"preset": preset, "every": 1, "hvp": hvp, "hvp_chunks": chunks})
        preset = f"{preset}/{hvp}" + (f"/{chunks}" if chunks > 1 else "")
        recorder = probed.recorder
        before_step, after_step = recorder.before_step, recorder.after_step
        seen: dict[str, object] = {}

        def capture(*args, x_t=None, before_step=before_step, seen=seen, **kwargs) -> None:
            seen["shared"] = {id(t) for t in (x_t or {}).values()}  # the train loop's own copy of x_t
            before_step(*args, x_t=x_t, **kwargs)

        def measured(recorder=recorder, after_step=after_step, seen=seen) -> dict:
            pending = recorder._pending or {}
            kept = [t for t in [*pending.get("grads", []), *pending.get("params", [])]
                    if id(t) not in seen["shared"]]
            seen["held"] = sum(t.numel() * t.element_size() for t in kept)
            with LiveBytes() as probe_tracker:
                row = after_step()
            seen["peak"] = probe_tracker.peak
            return row

        recorder.before_step, recorder.after_step = capture, measured
        probed.step(0)
        held = seen["held"] / model_bytes
        print(f"  {preset:<14} held across optimizer.step(){verdict(held, held <= 2, timed=False)}  model sizes"
              " (goal <= 2; its clone of g_t, x_t shared with the loop)")
        peak = seen["peak"] / model_bytes
        print(f"  {preset:<14} peak allocated in after_step {peak:7.3f}   model"
              " sizes (transient: probe passes, HVP graph, Lanczos/Hutch++ vectors)")
        print(f"  {preset:<14} peak / bare step's peak     {verdict(peak / bare_peak, peak <= 2 * bare_peak, timed=False)}"
              "  (goal <= 2)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--optimizer", default="lion")
    parser.add_argument("--steps", type=int, default=60, help="lockstep rounds measured")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=9, help="oracle repeats")
    parser.add_argument("--overhead", type=float, default=0.10)
    parser.add_argument("--budget-preset", default="standard")
    parser.add_argument("--budget-steps", type=int, default=300)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--only", choices=("lockstep", "oracle", "budget", "memory"), default=None,
                        help="run one section")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, cores {WATCH.cores}, "
          f"load average {WATCH.peak:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        sections = {"lockstep": lockstep, "oracle": oracle_costs, "budget": budget, "memory": memory}
        for name, section in sections.items():
            if args.only in (None, name):
                section(args, root)
    print(WATCH.describe() + ("; timings missed on a loaded machine are 'not measured', not misses" if WATCH.loaded
                              else ""))


if __name__ == "__main__":
    main()
