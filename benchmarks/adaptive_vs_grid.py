"""Adaptive warm-up (f* = auto, nothing hand-set) against a warm-up grid on the `lm` task.

For each optimizer: the grid {0, 1, 2, 5, 10, 20 %} of cosine warm-up and the adaptive schedule, same
step budget and seeds. Goal (issue 6): adaptive <= best grid point + 1 seed-sigma, and below the grid
median. Prints one table and writes reports/adaptive_vs_grid.csv. Default size: about an hour on 2
CPU cores; `--steps/--seeds` shrink it. Interrupted sweeps resume (finished runs are reused).

    python benchmarks/adaptive_vs_grid.py --out runs/adaptive_vs_grid
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from smoothprobe.sweep import sweep
from smoothprobe.train import TrainConfig

PEAK_LR = {"muon": 0.02, "lion": 1e-3, "normsgd": 0.05}
GRID = [0.0, 0.01, 0.02, 0.05, 0.1, 0.2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--optimizers", default="muon,lion,normsgd")
    parser.add_argument("--max-warmup", type=float, default=0.3, help="the adaptive schedule's warm-up cap")
    parser.add_argument("--out", default="runs/adaptive_vs_grid")
    parser.add_argument("--table", default=str(Path(__file__).resolve().parents[1] / "reports" / "adaptive_vs_grid.csv"))
    args = parser.parse_args()
    tables = []
    for name in args.optimizers.split(","):
        base = TrainConfig(task="lm", model="tiny", optimizer=name, lr=PEAK_LR[name], steps=args.steps,
                           batch_size=16, seq_len=64, eval_every=max(1, args.steps // 4))
        table = sweep(base, Path(args.out) / name, GRID, args.seeds, adaptive={"f_star": "auto", "max_warmup": args.max_warmup})
        table.insert(0, "optimizer", name)
        tables.append(table)
        adaptive = table[table.config == "adaptive"].iloc[0]
        best = table[table.best_grid].iloc[0]
        meets = adaptive.minus_best_in_sigma <= 1 and adaptive.val_loss_mean < adaptive.grid_median
        print(f"{name}: adaptive {adaptive.val_loss_mean:.4f} vs best grid {best.config} "
              f"{best.val_loss_mean:.4f} ({adaptive.minus_best_in_sigma:+.2f} sigma), grid median "
              f"{adaptive.grid_median:.4f}: {'MEETS' if meets else 'MISSES'} the goal", flush=True)
    result = pd.concat(tables, ignore_index=True)
    result.insert(1, "steps", args.steps)
    Path(args.table).parent.mkdir(parents=True, exist_ok=True)
    result.to_csv(args.table, index=False, float_format="%.5f")
    print(result.to_string(index=False))


if __name__ == "__main__":
    main()
