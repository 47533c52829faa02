"""The eval harness's own cost: the built-in scenario library with a scripted restart model.

    .venv/bin/python bench/eval.py [--parallel 1 2] [--json]

For each ``--parallel`` value, runs every built-in scenario once with a scripted model that
starts every node (`supervisorctl start all`), says it is done, and gives up when the
monitor does not confirm it; a restart fixes some scenarios, not others, which is the point:
the harness's cost must not depend on the outcome.

Prints, per trial, its outcome, its time to mitigate and the harness's own overhead:
everything but the incident window (from the last fault injected to the verdict, which
holds the agent's time and the settle window), i.e. preparing or resetting the lab, the
healthy baseline, injecting, reverting and stopping. Then each run's total time, its TTM
p50 over the trials that succeeded, and the ratio of the parallel run's time to the serial
run's.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from operator_ai.config import Settings
from operator_ai.eval import runs, scenario
from operator_ai.eval.stats import quantile
from operator_ai.store import EvalTrial, Store


def restart_model(home: Path) -> str:
    """Start every node of the trial's lab (the only lab its sandbox sees), claim a fix,
    and give up if the monitor does not confirm it."""
    path = home / "restart.yaml"
    start = f"supervisorctl -c {home}/labs/eval-*/supervisord.conf start all"
    path.write_text(yaml.safe_dump({"turns": [
        {"text": "Starting every node.", "shell": [{"command": start, "reasoning": "restart"}]},
        {"text": "Started every node; it should hold now."},
        {"text": "ESCALATE: a restart did not fix it."},
    ]}))  # fmt: skip
    return f"scripted:{path}"


def library_run(settings: Settings, parallel: int) -> tuple[float, list[EvalTrial]]:
    chosen = scenario.find([])
    with Store(settings.db) as store:
        started = time.monotonic()
        record = runs.run(settings, store, chosen, restart_model(settings.home),
                          parallel=parallel, on_trial=_say)  # fmt: skip
        return time.monotonic() - started, store.eval_trials(record.id)


def _say(trial: EvalTrial) -> None:
    ttm = f"{trial.ttm_seconds:6.1f} s" if trial.ttm_seconds is not None else "     -  "
    print(f"  {trial.scenario:<34} {trial.outcome:<12} TTM {ttm} "
          f"overhead {trial.overhead_seconds:6.1f} s", file=sys.stderr)  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parallel", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="operator-bench-eval-"))
    home.chmod(0o755)
    settings = Settings(home=home, db=f"sqlite:///{home / 'operator.db'}")
    results: dict[str, Any] = {}
    try:
        for parallel in args.parallel:
            print(f"library with --parallel {parallel}:", file=sys.stderr)
            total, trials = library_run(settings, parallel)
            overheads = [t.overhead_seconds for t in trials]
            ttms = [t.ttm_seconds for t in trials if t.ttm_seconds is not None]
            results[f"parallel_{parallel}"] = {
                "total_seconds": round(total, 1),
                "trials": len(trials),
                "outcomes": dict(Counter(str(t.outcome) for t in trials)),
                "overhead_p50": round(quantile(overheads, 0.5) or 0, 2),
                "overhead_p90": round(quantile(overheads, 0.9) or 0, 2),
                "overhead_max": round(max(overheads), 2),
                "ttm_p50": round(quantile(ttms, 0.5) or 0, 2) if ttms else None,
                "per_trial": {
                    t.scenario: {
                        "outcome": str(t.outcome),
                        "ttm": t.ttm_seconds,
                        "overhead": t.overhead_seconds,
                    }
                    for t in trials
                },
            }
    finally:
        shutil.rmtree(home, ignore_errors=True)

    if len(args.parallel) > 1:
        first, last = (results[f"parallel_{p}"] for p in (args.parallel[0], args.parallel[-1]))
        results["ratio"] = round(last["total_seconds"] / first["total_seconds"], 2)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for parallel in args.parallel:
        r = results[f"parallel_{parallel}"]
        print(f"--parallel {parallel}: {r['trials']} trials in {r['total_seconds']} s; "
              f"harness overhead per trial p50 {r['overhead_p50']} s, "
              f"p90 {r['overhead_p90']} s, max {r['overhead_max']} s; "
              f"TTM p50 {r['ttm_p50']} s; "
              f"outcomes {r['outcomes']}")  # fmt: skip
    if "ratio" in results:
        print(f"--parallel {args.parallel[-1]} took {results['ratio']:.0%} of the time of "
              f"--parallel {args.parallel[0]}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
