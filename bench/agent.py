"""The agent's own cost: platform overhead per step, and scripted time to mitigate.

    .venv/bin/python bench/agent.py [--steps 50] [--trials 5] [--interval 1] [--json]

Brings up a 3-member etcd lab (netns mode as root, so commands run in the bwrap sandbox in
the lab's ops namespace) and a SQLite store.

- Overhead per step: one session of a scripted model that runs `true` ``--steps`` times. A
  step is the time from one command's result to the next: the model turn (a scripted one
  costs microseconds), the budget check, the reasoning, call and result audit writes, and
  the sandbox starting and running `true`. No model time is counted.
- Time to mitigate: kill a follower; the monitor runs on its own thread at ``--interval``
  and a worker polls the queue; a scripted model starts the member with `supervisorctl`. TTM
  = verified resolution - fault injected, per trial.
- The diagnostic snapshot: the subject's read-only commands for a ticket, run at once in
  the sandbox as the agent runs them before its first turn, ``--snapshots`` times on the
  healthy lab: the wall time of each.
- The approval classifier: its time per command over the commands of its test table
  (tests/test_classify.py), parse and judgement included.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import yaml

from detect import quantile
from operator_ai.agent import snapshot, work
from operator_ai.agent.worker import AgentOptions, agent_factory, store_files
from operator_ai.approval import classify
from operator_ai.config import Settings
from operator_ai.lab import Lab, LabDir
from operator_ai.lab import injections as chaos
from operator_ai.monitor import Monitor
from operator_ai.plugins import load_subject
from operator_ai.sandbox import sandbox_for
from operator_ai.store import Status, Store, Violation


def script(path: Path, turns: list[dict[str, object]]) -> str:
    path.write_text(yaml.safe_dump({"turns": turns}))
    return f"scripted:{path}"


def step(command: str) -> dict[str, object]:
    return {"text": "next", "shell": [{"command": command, "reasoning": "bench"}]}


def overhead(settings: Settings, store: Store, steps: int) -> list[float]:
    """Seconds between consecutive command results in one scripted session."""
    spec = script(
        settings.home / "steps.yaml", [step("true")] * steps + [{"text": "ESCALATE: done"}]
    )
    store.report_violation(Violation("etcd", "bench", "cluster", "overhead run"))
    stamps: list[float] = []

    def listener(kind: str, data: dict[str, object]) -> None:
        if kind == "result":
            stamps.append(time.perf_counter())

    stop = threading.Event()
    agent_for = agent_factory(settings, store, AgentOptions(model=spec), stop, listener)
    work(store, "bench", agent_for, stop, model=spec, lease_seconds=60, once=True)
    return [b - a for a, b in itertools.pairwise(stamps)]


def mitigate(settings: Settings, store: Store, lab: Lab, trials: int) -> list[float]:
    """Fault injected to verified resolution, for kill-follower, per trial."""
    stop = threading.Event()
    conf = lab.path / "supervisord.conf"
    times = []
    for n in range(trials):
        leader = lab.leader()
        target = next(node.name for node in lab.state.nodes if node.name != leader)
        spec = script(settings.home / f"fix{n}.yaml", [
            step(f"supervisorctl -c {conf} start {target}"),
            {"text": f"Started {target}."},
        ])  # fmt: skip
        agent_for = agent_factory(
            settings, store, AgentOptions(model=spec), stop, lambda k, d: None
        )
        injection = chaos.inject(lab, "kill", target, {})
        injected = datetime.fromisoformat(injection.injected_at)
        deadline = time.monotonic() + 60
        while not work(store, "bench", agent_for, stop, model=spec, lease_seconds=60, once=True):
            if time.monotonic() > deadline:
                raise RuntimeError("no ticket to work within 60 s")
            time.sleep(0.05)
        ticket = next(t for t in store.tickets() if t.target == target and t.resolved_at)
        if ticket.status != Status.RESOLVED or ticket.resolved_by != "agent":
            raise RuntimeError(f"trial {n + 1}: ticket {ticket.key} ended {ticket.status}")
        assert ticket.resolved_at is not None
        times.append((ticket.resolved_at - injected).total_seconds())
        print(f"kill-follower {n + 1}/{trials}: TTM {times[-1]:.2f} s", file=sys.stderr)
        chaos.revert(lab, injection.id)
        wait_healthy(store)
    return times


def snapshots(settings: Settings, store: Store, lab: Lab, runs: int) -> list[float]:
    """Seconds for the whole snapshot, as the agent takes it, on the healthy lab."""
    sandbox = sandbox_for(lab, settings.home, hide=store_files(settings.db))
    commands = lab.subject.diagnostics(lab.cluster, ["etcd2"])
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        results = snapshot.take(sandbox, commands)
        times.append(time.perf_counter() - started)
        failed = [c for c, r in zip(commands, results, strict=True) if r.exit_code != 0]
        if failed:
            raise RuntimeError(f"on a healthy lab, these diagnostics failed: {failed}")
    return times


def wait_healthy(store: Store, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while store.live() and time.monotonic() < deadline:
        time.sleep(0.1)


def figures(values: list[float], scale: float = 1.0) -> dict[str, float]:
    return {q: round(quantile(values, p) * scale, 2) for q, p in (("p50", 0.5), ("p90", 0.9))} | {
        "max": round(max(values) * scale, 2)
    }


def classifier(rounds: int = 20) -> dict[str, float]:
    """The approval classifier's time per command, over the commands of its test table."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from test_classify import TABLE

    times = []
    for _ in range(rounds):
        for command, _verdict in TABLE:
            started = time.perf_counter()
            classify(command)
            times.append(time.perf_counter() - started)
    return figures(times, 1e6) | {"commands": len(TABLE) * rounds}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--snapshots", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="operator-bench-"))
    home.chmod(0o755)
    lab = Lab(LabDir(home, "etcd"))
    settings = Settings(home=home, db=f"sqlite:///{home / 'operator.db'}")
    results: dict[str, object] = {"mode": "netns" if os.geteuid() == 0 else "loopback"}
    results["classifier_us"] = classifier()
    try:
        lab.up(load_subject("etcd"), 3, None, settings.lab_user)
        with Store(settings.db) as store:
            taken = snapshots(settings, store, lab, args.snapshots)
            results["snapshot_seconds"] = figures(taken)
            results["overhead_ms"] = figures(overhead(settings, store, args.steps), 1000)
            store.resolve(store.live()[0].id, "bench: overhead run done")
            monitor = Monitor(store, lab.subject, lab.cluster, interval=args.interval)
            stop = threading.Event()
            runner = threading.Thread(target=monitor.run, args=(lambda t: None, stop))
            runner.start()
            try:
                results["ttm_seconds"] = figures(mitigate(settings, store, lab, args.trials))
            finally:
                stop.set()
                runner.join()
    finally:
        lab.down()
        shutil.rmtree(home, ignore_errors=True)

    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    o, t, c = results["overhead_ms"], results["ttm_seconds"], results["classifier_us"]
    d = results["snapshot_seconds"]
    print(f"etcd lab, {results['mode']} mode, monitor interval {args.interval:g} s")
    print(f"platform overhead per step over {args.steps} steps (ms): "
          f"p50 {o['p50']}  p90 {o['p90']}  max {o['max']}")  # type: ignore[index]  # fmt: skip
    print(f"diagnostic snapshot on a healthy lab, {args.snapshots} runs (s): "
          f"p50 {d['p50']}  p90 {d['p90']}  max {d['max']}")  # type: ignore[index]  # fmt: skip
    print(f"scripted time to mitigate, kill-follower, {args.trials} trials (s): "
          f"p50 {t['p50']}  p90 {t['p90']}  max {t['max']}")  # type: ignore[index]  # fmt: skip
    print(f"approval classifier per command over {c['commands']} commands (us): "
          f"p50 {c['p50']}  p90 {c['p90']}  max {c['max']}")  # type: ignore[index]  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
