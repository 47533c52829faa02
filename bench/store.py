"""Store throughput: claims per second and audit appends per second, on SQLite and on a
real PostgreSQL server started for the run.

    .venv/bin/python bench/store.py [--tickets 2000] [--appends 5000] [--workers 4] [--json]

SQLite runs as Operator configures it (WAL, synchronous=NORMAL). PostgreSQL runs with fsync
and synchronous_commit on, as a production server would. Each claim is one transaction that
takes the ticket, opens its session and records the event; each append is one transaction
that extends the hash chain.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from operator_ai.store import AuditKind, Store, Violation
from operator_ai.testing.postgres import PostgresUnavailable, create_database, postgres_server


def fill(url: str, n: int) -> None:
    with Store(url) as store:
        for i in range(n):
            store.report_violation(Violation("bench", "member_down", f"n{i}", "down"))


def claims_per_second(url: str, n: int) -> float:
    fill(url, n)
    with Store(url) as store:
        start = time.perf_counter()
        claimed = 0
        while store.claim("bench-worker", lease_seconds=600) is not None:
            claimed += 1
        elapsed = time.perf_counter() - start
    assert claimed == n, f"claimed {claimed} of {n}"
    return n / elapsed


def _drain(args: tuple[str, str, float]) -> int:
    url, name, start_at = args
    with Store(url) as store:
        time.sleep(max(0.0, start_at - time.time()))
        count = 0
        while store.claim(name, lease_seconds=600) is not None:
            count += 1
        return count


def concurrent_claims_per_second(url: str, n: int, workers: int) -> float:
    fill(url, n)
    start_at = time.time() + 2.0  # every worker has opened its store by then
    with mp.get_context("spawn").Pool(workers) as pool:
        pending = pool.map_async(_drain, [(url, f"w{i}", start_at) for i in range(workers)])
        counts = pending.get(timeout=600)
    elapsed = time.time() - start_at
    assert sum(counts) == n, f"claimed {sum(counts)} of {n}"
    return n / elapsed


def appends_per_second(url: str, n: int) -> float:
    fill(url, 1)
    with Store(url) as store:
        claim = store.claim("bench-worker", lease_seconds=600)
        assert claim is not None
        output = "etcd member list output line\n" * 20
        start = time.perf_counter()
        for i in range(n):
            store.append_audit(
                claim.session.id, AuditKind.TOOL_RESULT, output, exit_code=0, duration_ms=i
            )
        elapsed = time.perf_counter() - start
        assert store.verify_audit().ok
    return n / elapsed


def run_backend(
    name: str, new_db: Callable[[str], str], args: argparse.Namespace
) -> dict[str, float]:
    results = {}
    for label, measure in (
        ("claims_per_s", lambda: claims_per_second(new_db("claims"), args.tickets)),
        (
            f"claims_per_s_{args.workers}_procs",
            lambda: concurrent_claims_per_second(new_db("concurrent"), args.tickets, args.workers),
        ),
        ("audit_appends_per_s", lambda: appends_per_second(new_db("appends"), args.appends)),
    ):
        results[label] = round(measure(), 1)
        if not args.json:
            print(f"  {name:<10} {label:<24} {results[label]:>10,.1f}", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--tickets", type=int, default=2000, help="tickets to claim per run")
    parser.add_argument("--appends", type=int, default=5000, help="audit entries to append")
    parser.add_argument("--workers", type=int, default=4, help="processes for concurrent claims")
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "all"], default="all")
    parser.add_argument("--json", action="store_true", help="print one JSON object at the end")
    args = parser.parse_args()

    report: dict[str, dict[str, float] | str] = {}
    with tempfile.TemporaryDirectory(prefix="operator-bench-") as tmp:
        if args.backend in ("sqlite", "all"):
            report["sqlite"] = run_backend(
                "sqlite", lambda tag: f"sqlite:///{Path(tmp) / tag}.db", args
            )
        if args.backend in ("postgresql", "all"):
            try:
                with postgres_server(durable=True) as server:
                    report["postgresql"] = run_backend(
                        "postgresql", lambda tag: create_database(server, tag), args
                    )
            except PostgresUnavailable as exc:
                report["postgresql"] = f"skipped: {exc}"
                if not args.json:
                    print(f"  postgresql skipped: {exc}", file=sys.stderr)
    if args.json:
        print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
