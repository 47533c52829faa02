"""Workers: claim tickets and hand each to a fresh ``Agent``, until asked to stop."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.engine import make_url

from operator_ai.agent.budget import Budget
from operator_ai.agent.loop import SETTLE_SECONDS, Agent, Listener
from operator_ai.agent.summary import Summarizer
from operator_ai.approval.gate import DEFAULT_TIMEOUT as DEFAULT_APPROVAL_TIMEOUT
from operator_ai.approval.gate import NEVER, Gate
from operator_ai.config import Settings
from operator_ai.errors import LabError, StoreError
from operator_ai.lab import Lab, LabDir
from operator_ai.models.spec import load_model
from operator_ai.sandbox import DEFAULT_TIMEOUT, sandbox_for
from operator_ai.store import Claim, Outcome, Store

AgentFor = Callable[[Claim], Agent]


def worker_name(index: int) -> str:
    return f"{socket.gethostname()}-{os.getpid()}-w{index}"


def work(
    store: Store,
    name: str,
    agent_for: AgentFor,
    stop: threading.Event,
    *,
    model: str,
    lease_seconds: float,
    once: bool = False,
    poll: float = 1.0,
    on_error: Callable[[str, Exception], None] = lambda name, exc: None,
    scope: str | None = None,
) -> list[Outcome]:
    """Claim and work tickets (of ``scope`` only, when given) one at a time. With ``once``,
    work at most one and return."""
    outcomes: list[Outcome] = []
    while not stop.is_set():
        try:
            outcome = _work_one(store, name, agent_for, model, lease_seconds, on_error, scope)
        except StoreError as exc:  # the store is down: keep trying, the lease protects the rest
            on_error(name, exc)
            outcome = None
        if outcome is not None:
            outcomes.append(outcome)
        if once:
            break
        if outcome is None:
            stop.wait(poll)
    return outcomes


def _work_one(
    store: Store,
    name: str,
    agent_for: AgentFor,
    model: str,
    lease_seconds: float,
    on_error: Callable[[str, Exception], None],
    scope: str | None,
) -> Outcome | None:
    """Claim one ticket and work it; None when there was nothing to claim."""
    store.release_expired()  # tickets of workers that died go back to the queue first
    claim = store.claim(name, lease_seconds, model=model, scope=scope)
    if claim is None:
        return None
    try:
        agent = agent_for(claim)
    except Exception as exc:  # no lab or sandbox for this ticket, or a bug: let it wait
        on_error(name, exc)
        store.end_session(claim.session.id, Outcome.FAILED, str(exc), backoff_seconds=60)
        return Outcome.FAILED
    try:
        return agent.run(claim)
    except StoreError:
        raise  # the session could not be closed: `work` waits for the store to come back
    except Exception as exc:  # not ours: the session has ended failed; say so, keep serving
        on_error(name, exc)
        return Outcome.FAILED
    finally:
        agent.model.close()


def run_workers(count: int, target: Callable[[str], object]) -> None:
    """Run ``target(worker_name)`` on ``count`` threads and wait for them all."""
    threads = [
        threading.Thread(target=target, args=(worker_name(i),), name=worker_name(i))
        for i in range(1, count + 1)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


@dataclass(frozen=True)
class AgentOptions:
    """How every session of a run is set up: the CLI's flags, resolved."""

    model: str
    budget: Budget = field(default_factory=Budget)
    settle_seconds: float = SETTLE_SECONDS
    command_timeout: float = DEFAULT_TIMEOUT
    unsafe_host: bool = False
    lab: str | None = None  # default: the lab the ticket's monitor watched (its scope)
    approval: str = NEVER
    approval_timeout: float = DEFAULT_APPROVAL_TIMEOUT
    hide: tuple[Path, ...] = ()
    """Paths kept out of the sandbox besides the store (an eval's scenarios)."""


def agent_factory(
    settings: Settings,
    store: Store,
    options: AgentOptions,
    stop: threading.Event,
    listener: Listener,
) -> AgentFor:
    """Build a fresh Agent for each claim: its lab, sandbox, briefing and model."""
    summarize = Summarizer(
        load_model(settings.summary_model, settings) if settings.summary_model else None
    )

    def agent_for(claim: Claim) -> Agent:
        lab = Lab(LabDir(settings.home, options.lab or claim.ticket.scope))
        if not lab.running():
            raise LabError(f"lab {lab.dir.name!r} for ticket #{claim.ticket.id} is not running")
        subject = lab.subject
        sandbox = sandbox_for(
            lab,
            settings.home,
            hide=[*store_files(settings.db), *options.hide],
            unsafe_host=options.unsafe_host,
        )
        about = getattr(sandbox, "about", "")
        return Agent(
            store=store,
            model=load_model(options.model, settings),
            sandbox=sandbox,
            subject=subject.name,
            briefing=subject.briefing(lab.cluster) + (f"\n{about}" if about else ""),
            budget=options.budget,
            settle_seconds=options.settle_seconds,
            command_timeout=options.command_timeout,
            lease_seconds=settings.lease_seconds,
            gate=Gate(store, options.approval, options.approval_timeout),
            diagnostics=subject.diagnostics(lab.cluster, sorted({t.target for t in claim.tickets})),
            summarize=summarize,
            stop=stop,
            listener=listener,
        )

    return agent_for


def store_files(url: str) -> list[Path]:
    """A SQLite store's files, which the sandbox hides wherever they are."""
    database = make_url(url).database
    if not url.startswith("sqlite") or not database:
        return []
    return [Path(database + suffix) for suffix in ("", "-wal", "-shm", "-journal")]
