"""A killed primary, seen two ways: how long until the monitor's ticket (TTD), and how long
the clients cannot write while the cluster fails over by itself.

    .venv/bin/python bench/failover.py [--subject redis|postgres] [--trials 20] [--json]

Brings up a lab (Redis: 3 servers and 3 sentinels; PostgreSQL: 3 Patroni members and 3
etcd members; netns mode as root, loopback otherwise), measures its memory at rest (the
proportional set size of every process of the lab), and runs the monitor on its own
thread. A client of its own, the kind the subject's load uses, writes every 10 ms. Each
trial kills the primary (Redis: SIGKILL; PostgreSQL: Patroni and PostgreSQL together, as a
lost host) at a random point of the monitor's cycle and measures:

- TTD: the ticket on the old primary (`node_down`, `member_down`) opened - the kill;
- failover as clients see it: the first write that succeeds after the first one that
  failed - that first failure.

Then it starts the old primary, waits until it is a replica and every ticket has cleared,
and goes on. Prints p50, p90 and max of both, how long `lab up` took, and the memory.
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
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import redis
from redis.sentinel import Sentinel

from operator_ai.eval.stats import quantile
from operator_ai.lab import Lab, LabDir, procs
from operator_ai.lab import injections as chaos
from operator_ai.monitor import Monitor
from operator_ai.plugins import load_subject
from operator_ai.store import Store
from operator_ai.subjects.postgres.load import writer_conninfo
from operator_ai.subjects.redis.nodes import MASTER, endpoint, sentinels

WRITE_EVERY = 0.01


def redis_writes(lab: Lab) -> Callable[[int], None]:
    """redis-py's Sentinel client, as the Redis load uses."""
    where = [endpoint(n) for n in sentinels(lab.cluster)]
    options = {"socket_timeout": 0.5, "socket_connect_timeout": 0.5}
    client = Sentinel(where, sentinel_kwargs=options, **options).master_for(MASTER, **options)
    return lambda n: client.set("bench:failover", n)


def postgres_writes(lab: Lab) -> Callable[[int], None]:
    """psycopg with every member and `target_session_attrs=read-write`, as the PostgreSQL
    load uses; a connection that failed is made again on the next write."""
    held: list[psycopg.Connection[Any]] = []
    run = f"bench-{os.getpid()}"

    def write(n: int) -> None:
        if not held or held[0].closed:
            held[:] = [psycopg.connect(writer_conninfo(lab.cluster), autocommit=True)]
        try:
            held[0].execute("INSERT INTO load_writes (run, seq) VALUES (%s, %s)", (run, n))
        except psycopg.Error:
            held[0].close()
            raise

    return write


SUBJECTS: dict[str, tuple[Callable[[Lab], Callable[[int], None]], str, str]] = {
    "redis": (redis_writes, "kill", "node_down"),
    "postgres": (postgres_writes, "crash", "member_down"),
}
"""Each subject's client, the fault that kills its primary, and the ticket it opens."""
ERRORS = (redis.RedisError, psycopg.Error, OSError)


def memory_at_rest(lab: Lab) -> int:
    """The proportional set size of the lab's processes (supervisord and everything under
    it, and whatever names the lab's directory), in bytes: shared pages counted once."""
    pids = set(procs.tree(lab.state.supervisor_pid or 0))
    for pid in procs.referencing(str(lab.path) + "/"):
        pids.update(procs.tree(pid))
    total = 0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        total += sum(int(line.split()[1]) * 1024 for line in text.splitlines()
                     if line.startswith("Pss:"))  # fmt: skip
    return total


class Writer:
    """One client writing every 10 ms, remembering when writes failed and when they worked
    again."""

    def __init__(self, write: Callable[[int], None]) -> None:
        self.write = write
        self.failed_at: float | None = None
        self.recovered_at: float | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            try:
                self.write(n)
            except ERRORS:
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


def trial(
    lab: Lab, store: Store, writer: Writer, interval: float, fault: str, invariant: str
) -> tuple[float, float]:
    old = lab.leader()
    if old is None:
        raise RuntimeError("the cluster has no primary")
    time.sleep(random.uniform(0, interval))  # land anywhere in the monitor's cycle
    writer.reset()
    injection = chaos.inject(lab, fault, old, {})
    injected = datetime.fromisoformat(injection.injected_at)
    key = f"{lab.subject.name}:{invariant}:{old}"
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
    parser.add_argument("--subject", choices=sorted(SUBJECTS), default="redis")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    mode = "netns" if os.geteuid() == 0 else "loopback"
    home = Path(tempfile.mkdtemp(prefix="operator-bench-"))
    home.chmod(0o755)
    lab = Lab(LabDir(home, args.subject))
    client, fault, invariant = SUBJECTS[args.subject]
    subject = load_subject(args.subject)
    results: dict[str, object] = {"subject": args.subject, "mode": mode, "trials": args.trials}
    try:
        started = time.perf_counter()
        lab.up(subject, 3, None, "operator-lab")
        results["lab_up_seconds"] = round(time.perf_counter() - started, 2)
        time.sleep(5)  # at rest: what starting up allocated and freed is settled
        results["memory_at_rest_mib"] = round(memory_at_rest(lab) / 2**20, 1)
        with Store(f"sqlite:///{home / 'operator.db'}") as store:
            monitor = Monitor(store, lab.subject, lab.cluster, interval=args.interval)
            stop = threading.Event()
            runner = threading.Thread(target=monitor.run, args=(lambda _t: None, stop))
            runner.start()
            writer = Writer(client(lab))
            writer.thread.start()
            ttd, failover = [], []
            try:
                for n in range(args.trials):
                    detected, down = trial(lab, store, writer, args.interval, fault, invariant)
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
    print(f"{subject.description}; {mode} mode, monitor interval {args.interval:g} s, "
          f"{args.trials} kills of the primary ({fault})")  # fmt: skip
    print(f"lab up: {results['lab_up_seconds']} s; memory at rest (PSS): "
          f"{results['memory_at_rest_mib']} MiB")  # fmt: skip
    for name, label in (("ttd_seconds", f"TTD ({invariant})"),
                        ("client_failover_seconds", "failover, as clients see it")):  # fmt: skip
        figures = results[name]
        assert isinstance(figures, dict)
        print(f"{label}: p50 {figures['p50']} s, p90 {figures['p90']} s, max {figures['max']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
