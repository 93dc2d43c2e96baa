"""Which closed-loop results a change of the fits can change: replay each fit-decided run to its decision.

Until a fit decides, a closed-loop run is the practical schedule and its fits only read it, so a run whose
deciding fit, under the present code, still takes the same branch at the same step is the same run, bit for
bit, to its end; one whose fits decided nothing cannot gain a decision from a larger p-value either. This
replays every fit-decided result of a benchmark folder up to its decision step (a few minutes each on one
core) and writes, per run, whether the decision held, into benchmarks/results/decision_replay_<task>.jsonl
(resumable: replayed runs are skipped). It was run for DESIGN 6 (the trend test discounted for
autocorrelation); the runs it lists as changed were rerun, the others relabelled (docs/design.md §5).

    python benchmarks/decision_replay.py lm        # or markov
"""

from __future__ import annotations

import json
import sys

import torch
import warmup_grid as wg

from smoothprobe.schedule import online
from smoothprobe.train import train


class Reached(Exception):
    """The replay reached the stored decision's step (or its pilot closed before it)."""


def replay(task: str) -> None:
    folder = wg.results_dir(wg.REPO / "runs" / wg.folder_name(task, False, "cpu"))
    target = wg.REPO / "benchmarks" / "results" / f"decision_replay_{task}.jsonl"
    done = {json.loads(line)["name"] for line in target.read_text().splitlines()} if target.exists() else set()
    seen: dict = {}
    observe = online.Pilot.observe

    def stop_at_decision(pilot, step, row, scheduler):
        closed = observe(pilot, step, row, scheduler)
        if closed or step >= seen["step"]:
            seen.update(decision=pilot.decision or {}, fit=pilot.fit)
            raise Reached
        return closed

    online.Pilot.observe = stop_at_decision
    for path in wg.result_files(folder):
        result = json.loads(path.read_text())
        stored = result.get("decision") or {}
        if (result["kind"] not in wg.CLOSED or result["name"] in done or stored.get("by", "fit") != "fit"
                or stored.get("branch") not in ("no-warmup", "fit-driven")):
            continue
        arm = wg.Arm(result["optimizer"], result["kind"], result["k"], result["warmup"], result["seed"],
                     result["lr_factor"])
        seen.clear()
        seen["step"] = stored["step"]
        try:
            train(wg.config_of(arm, wg.base_config(False, "cpu", task), folder), wg.REPO / "runs" /
                  f"decision_replay_{task}", overwrite=True, progress=False)
        except Reached:
            pass
        now, fit = seen.get("decision", {}), seen.get("fit")
        line = {"name": result["name"], "same": (now.get("branch"), now.get("step")) == (stored["branch"], stored["step"]),
                "old": [stored["branch"], stored["step"]], "new": [now.get("branch"), now.get("step")],
                "p": None if fit is None else fit.spearman_p,
                "n_eff": None if fit is None else fit.data.get("spearman_n_eff"),
                "status": None if fit is None else fit.status, "reason": (now.get("reason") or "")[:160]}
        print(json.dumps(line), flush=True)
        with target.open("a") as out:
            out.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    torch.set_num_threads(1)
    replay(sys.argv[1] if len(sys.argv) > 1 else "lm")
