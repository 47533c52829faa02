"""Eval runs and their trials in the store: what `operator eval` measured, kept so runs can
be listed, shown, compared and reported later."""

from __future__ import annotations

from dataclasses import fields
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from operator_ai.errors import NotFound
from operator_ai.store.records import EvalRun, EvalTrial, TrialOutcome
from operator_ai.store.schema import eval_runs, eval_trials


def start(conn: sa.Connection, values: dict[str, Any]) -> EvalRun:
    row = conn.execute(eval_runs.insert().values(values).returning(*eval_runs.c)).one()
    return EvalRun(**row._mapping)


def end(conn: sa.Connection, run_id: int, now: datetime) -> EvalRun:
    run(conn, run_id)
    conn.execute(eval_runs.update().where(eval_runs.c.id == run_id).values(ended_at=now))
    return run(conn, run_id)


def run(conn: sa.Connection, run_id: int) -> EvalRun:
    row = conn.execute(sa.select(eval_runs).where(eval_runs.c.id == run_id)).first()
    if row is None:
        raise NotFound(f"no eval run {run_id}", hint="`operator eval list` shows the runs.")
    return EvalRun(**row._mapping)


def runs(conn: sa.Connection, limit: int | None) -> list[EvalRun]:
    query = sa.select(eval_runs).order_by(eval_runs.c.id.desc()).limit(limit)
    return [EvalRun(**r._mapping) for r in conn.execute(query)]


TRIAL_FIELDS = {f.name for f in fields(EvalTrial)} - {"id"}


def add_trial(conn: sa.Connection, values: dict[str, Any]) -> EvalTrial:
    missing = TRIAL_FIELDS - set(values)
    if missing:
        raise ValueError(f"a trial needs {', '.join(sorted(missing))}")
    run(conn, values["run_id"])
    row = conn.execute(eval_trials.insert().values(values).returning(*eval_trials.c)).one()
    return _trial(row)


def trials(conn: sa.Connection, run_id: int) -> list[EvalTrial]:
    query = sa.select(eval_trials).where(eval_trials.c.run_id == run_id).order_by("id")
    return [_trial(r) for r in conn.execute(query)]


def _trial(row: sa.Row[Any]) -> EvalTrial:
    values = dict(row._mapping)
    values["outcome"] = TrialOutcome(values["outcome"])
    return EvalTrial(**values)
