"""A killed Redis primary, seen two ways: how long until the monitor's ticket (TTD), and how
long the clients cannot write while Sentinel fails over.

    .venv/bin/python bench/failover.py [--trials 20] [--interval 1] [--json]

Brings up a Redis lab (3 servers, 3 sentinels; netns mode as root, loopback otherwise) and
runs the monitor on its own thread. A client of its own, redis-py's Sentinel client as the
load uses, writes every 10 ms. Each trial kills the primary at a random point of the
monitor's cycle and measures:

- TTD: the `node_down` ticket on the old primary opened - the kill;
- failover as clients see it: the first write that succeeds after the first one that
  failed - that first failure.

Then it starts the old primary, waits until it is a replica and every ticket has cleared,
and goes on. Prints p50, p90 and max of both, and how long `lab up` took.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import redis
from redis.sentinel import Sentinel

from operator_ai.eval.stats import quantile
from operator_ai.lab import Lab, LabDir
from operator_ai.lab import injections as chaos
from operator_ai.monitor import Monitor
from operator_ai.plugins import load_subject
from operator_ai.store import Store
from operator_ai.subjects.redis.nodes import MASTER, endpoint, sentinels

WRITE_EVERY = 0.01


class Writer:
    """One Sentinel client writing every 10 ms, remembering when writes failed and when
    they worked again."""

    def __init__(self, lab: Lab) -> None:
        where = [endpoint(n) for n in sentinels(lab.cluster)]
        options = {"socket_timeout": 0.5, "socket_connect_timeout": 0.5}
        self.client = Sentinel(where, sentinel_kwargs=options, **options).master_for(
            MASTER, **options
        )
        self.failed_at: float | None = None
        self.recovered_at: float | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            try:
                self.client.set("bench:failover", n)
            except (redis.RedisError, OSError):
                if self.failed_at is None:
                    self.failed_at = time.time()
            else:
                if self.failed_at is not None and self.recovered_at is None:
                    self.recovered_at = time.time()
            time.sleep(WRITE_EVERY)

    def reset(self) -> None:
        self.failed_at = self.recovered_at = None


def wait(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


def trial(lab: Lab, store: Store, writer: Writer, interval: float) -> tuple[float, float]:
    old = lab.leader()
    if old is None:
        raise RuntimeError("the sentinels name no primary")
    time.sleep(random.uniform(0, interval))  # land anywhere in the monitor's cycle
    writer.reset()
    injection = chaos.inject(lab, "kill", old, {})
    injected = datetime.fromisoformat(injection.injected_at)
    key = f"redis:node_down:{old}"
    wait(lambda: any(t.key == key for t in store.live()), 30, key)
    ticket = next(t for t in store.live() if t.key == key)
    opened = max(e.at for e in store.events(ticket.id) if e.kind in ("opened", "reopened"))
    wait(lambda: writer.recovered_at is not None, 60, "a write to succeed after the failover")
    assert writer.failed_at is not None and writer.recovered_at is not None
    failover = writer.recovered_at - writer.failed_at
    chaos.revert(lab, injection.id)
    wait(lambda: lab.observe(2.0).nodes[old].get("role") == "replica", 60, f"{old} a replica")
    wait(lambda: not store.live(), 60, "every ticket cleared")
    return (opened - injected).total_seconds(), failover


def summary(values: list[float]) -> dict[str, float]:
    return {
        "p50": round(quantile(values, 0.5) or 0.0, 2),
        "p90": round(quantile(values, 0.9) or 0.0, 2),
        "max": round(max(values), 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    mode = "netns" if os.geteuid() == 0 else "loopback"
    home = Path(tempfile.mkdtemp(prefix="operator-bench-"))
    home.chmod(0o755)
    lab = Lab(LabDir(home, "redis"))
    results: dict[str, object] = {"mode": mode, "trials": args.trials}
    try:
        started = time.perf_counter()
        lab.up(load_subject("redis"), 3, None, "operator-lab")
        results["lab_up_seconds"] = round(time.perf_counter() - started, 2)
        with Store(f"sqlite:///{home / 'operator.db'}") as store:
            monitor = Monitor(store, lab.subject, lab.cluster, interval=args.interval)
            stop = threading.Event()
            runner = threading.Thread(target=monitor.run, args=(lambda _t: None, stop))
            runner.start()
            writer = Writer(lab)
            writer.thread.start()
            ttd, failover = [], []
            try:
                for n in range(args.trials):
                    detected, down = trial(lab, store, writer, args.interval)
                    ttd.append(detected)
                    failover.append(down)
                    print(f"trial {n + 1}/{args.trials}: TTD {detected:.2f} s, "
                          f"clients could not write for {down:.2f} s", file=sys.stderr)  # fmt: skip
            finally:
                writer.stop.set()
                stop.set()
                runner.join()
        results["ttd_seconds"] = summary(ttd)
        results["client_failover_seconds"] = summary(failover)
    finally:
        lab.down()
        shutil.rmtree(home, ignore_errors=True)

    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"Redis with Sentinel lab, {mode} mode, monitor interval {args.interval:g} s, "
          f"{args.trials} kills of the primary")  # fmt: skip
    print(f"lab up: {results['lab_up_seconds']} s")
    for name, label in (("ttd_seconds", "TTD (node_down)"),
                        ("client_failover_seconds", "failover, as clients see it")):  # fmt: skip
        figures = results[name]
        assert isinstance(figures, dict)
        print(f"{label}: p50 {figures['p50']} s, p90 {figures['p90']} s, max {figures['max']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
