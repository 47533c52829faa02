"""`operator eval`: run scenarios against a model and read the numbers."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from operator_ai.cli.audit import transcript_text
from operator_ai.cli.context import app_context, stop_on_signals
from operator_ai.cli.output import (
    JsonLinesOption,
    JsonOption,
    console,
    err_console,
    plain,
    print_json,
    print_json_line,
    table,
    when,
)
from operator_ai.config import Settings
from operator_ai.errors import UsageError
from operator_ai.eval import report as html_report
from operator_ai.eval import runs, scenario
from operator_ai.eval.stats import Summary, compare, summarize
from operator_ai.store import EvalRun, EvalTrial, Store
from operator_ai.tui.text import shown, styled

app = typer.Typer(help="Measure an AI operator on scenarios: incidents as data.",
                  no_args_is_help=True)  # fmt: skip

RunArgument = typer.Argument(..., help="A run's id, as `operator eval list` shows.")
ScenariosOption = typer.Option(
    [], "--scenarios", help="A folder (or file) of scenarios besides the built-in ones; repeatable."
)
ModelOption = typer.Option(
    None, "--model", help="The model under test (default OPERATOR_MODEL); none: no agent."
)
RootOption = typer.Option(
    False, "--allow-root-scripts",
    help="Run scenarios of your own whose script faults run as root (the built-in ones may).",
)  # fmt: skip


@app.command("run")
def run_(
    ctx: typer.Context,
    names: list[str] = typer.Argument(
        None,
        help="Scenario names or files (`operator eval scenarios`); none: every scenario of "
        "--scenarios, or the whole built-in library.",
    ),
    model: str | None = ModelOption,
    trials: int = typer.Option(1, "--trials", min=1, help="Trials of each scenario."),
    parallel: int = typer.Option(1, "--parallel", min=1, help="Trials at once, each in its lab."),
    folders: list[Path] = ScenariosOption,
    allow_root: bool = RootOption,
    as_json: bool = JsonLinesOption,
) -> None:
    """Run scenarios against a model: each trial injects its faults into a healthy lab, lets
    the agent work, and judges by the monitor. Prints each trial as it ends, then a summary.
    Ctrl-C stops: the trials under way are cleaned up and not kept."""
    context = app_context(ctx)
    spec = model or context.settings.model
    if not spec:
        raise UsageError("no model to evaluate", hint="Pass --model SPEC, or --model none.")
    chosen = scenario.find(names or [], folders)
    _check_root(chosen, allow_root)
    stop = stop_on_signals()
    record = _run(context.settings, context.store, chosen, spec, trials, parallel, None,
                  as_json, stop)  # fmt: skip
    _finish(context.store, record, as_json, stop)


@app.command()
def campaign(
    ctx: typer.Context,
    path: Path = typer.Argument(..., help="A campaign file: name, models, scenarios, trials."),
    allow_root: bool = RootOption,
    as_json: bool = JsonLinesOption,
) -> None:
    """Scenarios x models x trials from one file: one run per model, to compare them."""
    context = app_context(ctx)
    plan, chosen = runs.load_campaign(path)
    _check_root(chosen, allow_root)
    for spec in plan.models:
        runs.check_model(spec, context.settings)  # every model before the first trial
    stop = stop_on_signals()
    for spec in plan.models:
        record = _run(context.settings, context.store, chosen, spec, plan.trials, plan.parallel,
                      plan.name, as_json, stop)  # fmt: skip
        _finish(context.store, record, as_json, stop)


def _check_root(chosen: list[scenario.Scenario], allowed: bool) -> None:
    """A root script of a scenario Operator does not ship runs only when asked for."""
    shipped = {p.resolve() for p in scenario.builtin()}
    theirs = [s.name for s in chosen if s.needs_fresh_lab and s.path.resolve() not in shipped]
    if theirs and not allowed:
        raise UsageError(
            f"{', '.join(theirs)} run scripts as root on this machine",
            hint="Read them, then pass --allow-root-scripts to run them.",
        )


def _run(
    settings: Settings,
    store: Store,
    chosen: list[scenario.Scenario],
    spec: str,
    trials: int,
    parallel: int,
    campaign_name: str | None,
    as_json: bool,
    stop: threading.Event,
) -> EvalRun:
    total = len(chosen) * trials
    bar = Progress(TextColumn("eval {task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), console=err_console,
                   disable=as_json or not err_console.is_terminal)  # fmt: skip
    task = bar.add_task(spec, total=total)

    def on_trial(trial: EvalTrial) -> None:
        if as_json:
            print_json_line({"kind": "trial", **plain(trial)})
        else:
            bar.console.print(_line(trial), soft_wrap=True)
        bar.advance(task)

    def say(message: str) -> None:
        if not as_json:
            bar.console.print(f"[dim]{shown(message)}[/]", soft_wrap=True)

    err_console.print(f"eval: {len(chosen)} scenarios x {trials} with {spec}, {parallel} at once")
    stopping = threading.Thread(target=_say_stopping, args=(stop,), daemon=True)
    stopping.start()
    with bar:
        return runs.run(settings, store, chosen, spec, trials=trials, parallel=parallel,
                        campaign=campaign_name, on_trial=on_trial, progress=say,
                        stop=stop)  # fmt: skip


def _say_stopping(stop: threading.Event) -> None:
    stop.wait()
    err_console.print("eval: stopping; cleaning up the trials under way (their labs, faults "
                      "and tickets)…")  # fmt: skip


def _line(t: EvalTrial) -> str:
    times = f"TTD {_s(t.ttd_seconds)} TTM {_s(t.ttm_seconds)}"
    return (f"{styled(t.outcome)} {shown(t.scenario)} #{t.attempt} {times} "
            f"{t.commands} cmds: {shown(t.why)}")  # fmt: skip


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}s"


def _finish(store: Store, record: EvalRun, as_json: bool, stop: threading.Event) -> None:
    """The run's summary; a stopped run says so and exits 130, as Ctrl-C does."""
    trials = store.eval_trials(record.id)
    if stop.is_set():
        err_console.print(f"eval: stopped; run {record.id} keeps the {len(trials)} trials "
                          "that ended")  # fmt: skip
    if as_json:
        print_json_line({"kind": "run", **plain(record), "stopped": stop.is_set(),
                         "summary": [_summary_json(s) for s in summarize(trials)]})  # fmt: skip
        if stop.is_set():
            raise typer.Exit(130)
        return
    console.print(_summary_table(record, summarize(trials)))
    console.print(f"[dim]run {record.id}: `operator eval show {record.id}`, "
                  f"`operator eval report {record.id} --html FILE`[/]")  # fmt: skip
    if stop.is_set():
        raise typer.Exit(130)


def _summary_json(s: Summary) -> dict[str, object]:
    low, high = s.interval
    return {"scenario": s.scenario, "trials": s.trials, "errors": s.errors,
            "successes": s.successes,
            "success_rate": s.rate, "interval95": [low, high], "outcomes": s.outcomes,
            "ttd_p50": s.p("ttd", 0.5), "ttd_p90": s.p("ttd", 0.9),
            "ttm_p50": s.p("ttm", 0.5), "ttm_p90": s.p("ttm", 0.9),
            "cost_usd": s.cost_usd, "false_positives": s.false_positives}  # fmt: skip


def _summary_table(record: EvalRun, summaries: list[Summary]) -> object:
    rows = table("scenario", "trials", "success (95% CI)", "outcomes", "TTD p50/p90",
                 "TTM p50/p90", "cost", "false +",
                 title=f"run {record.id}: {shown(record.model)}", caption=None)  # fmt: skip
    for s in summaries:
        low, high = s.interval
        rows.add_row(
            shown(s.scenario), str(s.trials), f"{s.rate:.0%} ({low:.0%}-{high:.0%})",
            ", ".join(f"{k} {v}" for k, v in sorted(s.outcomes.items())),
            f"{_s(s.p('ttd', 0.5))} / {_s(s.p('ttd', 0.9))}",
            f"{_s(s.p('ttm', 0.5))} / {_s(s.p('ttm', 0.9))}",
            f"${s.cost_usd:.2f}", str(s.false_positives),
        )  # fmt: skip
    return rows


@app.command()
def scenarios(
    ctx: typer.Context, folders: list[Path] = ScenariosOption, as_json: bool = JsonOption
) -> None:
    """The scenarios there are: the built-in library, and those in --scenarios folders."""
    found = scenario.find([], folders)
    if as_json:
        print_json([s.model_dump(mode="json") for s in found])
        return
    rows = table("name", "subject", "faults", "expects", "fix", caption=None)
    for s in found:
        faults = ", ".join(f"{f.fault}@{f.target or 'cluster'}" for f in s.faults) or "(none)"
        rows.add_row(shown(s.name), s.subject, shown(faults),
                     ", ".join(s.expect.tickets) or "no ticket", shown(s.fix))  # fmt: skip
    console.print(rows)


@app.command("list")
def list_(
    ctx: typer.Context,
    limit: int = typer.Option(20, "--limit", min=1, help="At most this many, newest first."),
    as_json: bool = JsonOption,
) -> None:
    """Eval runs, newest first."""
    store = app_context(ctx).store
    found = store.eval_runs(limit)
    if as_json:
        print_json(found)
        return
    if not found:
        console.print("No eval runs yet: `operator eval run --help`.")
        return
    rows = table("id", "model", "campaign", "scenarios", "trials", "success", "started")
    for r in found:
        trials = store.eval_trials(r.id)
        won = sum(1 for t in trials if t.outcome == "success")
        rows.add_row(str(r.id), shown(r.model), shown(r.campaign or "-"), str(len(r.scenarios)),
                     str(len(trials)), f"{won}/{len(trials)}", when(r.started_at))  # fmt: skip
    console.print(rows)


@app.command()
def show(ctx: typer.Context, run_id: int = RunArgument, as_json: bool = JsonOption) -> None:
    """One run: its summary per scenario, then every trial."""
    store = app_context(ctx).store
    record, trials = store.eval_run(run_id), store.eval_trials(run_id)
    if as_json:
        print_json({"run": record, "summary": [_summary_json(s) for s in summarize(trials)],
                    "trials": trials})  # fmt: skip
        return
    console.print(
        f"run {record.id} · {shown(record.model)} · operator {record.operator_version} · "
        f"prompt {record.prompt_sha256[:12]} · started {when(record.started_at)}"
    )
    console.print(_summary_table(record, summarize(trials)))
    rows = table("trial", "scenario", "outcome", "TTD", "TTM", "steps", "cmds", "writes",
                 "tokens in/out", "cost", "sessions", "why")  # fmt: skip
    for t in trials:
        rows.add_row(str(t.id), f"{shown(t.scenario)} #{t.attempt}", styled(t.outcome),
                     _s(t.ttd_seconds), _s(t.ttm_seconds), str(t.steps), str(t.commands),
                     str(t.state_changing), f"{t.tokens_in}/{t.tokens_out}", f"${t.cost_usd:.3f}",
                     ",".join(map(str, t.sessions)) or "-", shown(t.why))  # fmt: skip
    console.print(rows)
    console.print("[dim]transcripts: `operator audit show SESSION`[/]")


@app.command("compare")
def compare_(
    ctx: typer.Context,
    run_a: int = typer.Argument(..., help="The baseline run."),
    run_b: int = typer.Argument(..., help="The run compared with it."),
    as_json: bool = JsonOption,
) -> None:
    """Per scenario: success rate with its interval, TTD and TTM p50/p90 and cost in each
    run, and what changed beyond chance (Fisher's exact test on success, Mann-Whitney on
    TTM, p < 0.05)."""
    store = app_context(ctx).store
    a, b = store.eval_run(run_a), store.eval_run(run_b)
    trials_a, trials_b = store.eval_trials(a.id), store.eval_trials(b.id)
    differences = compare(trials_a, trials_b)
    notes = _unlike(a, b, trials_a, trials_b)
    if as_json:
        print_json({"scenarios": [{"scenario": d.scenario,
                                   "a": _summary_json(d.a) if d.a else None,
                                   "b": _summary_json(d.b) if d.b else None,
                                   "success_p": d.success_p, "ttm_p": d.ttm_p,
                                   "changes": d.changes} for d in differences],
                    "notes": notes})  # fmt: skip
        return
    rows = table("scenario", f"success {a.id}", f"success {b.id}", f"TTM p50/p90 {a.id}",
                 f"TTM p50/p90 {b.id}", f"cost {a.id}", f"cost {b.id}", "changed",
                 title=f"run {a.id} ({shown(a.model)}) against run {b.id} ({shown(b.model)})",
                 caption=None)  # fmt: skip
    for d in differences:
        rows.add_row(shown(d.scenario), _rate(d.a), _rate(d.b), _ttm(d.a), _ttm(d.b),
                     _cost(d.a), _cost(d.b), ", ".join(d.changes) or "-")  # fmt: skip
    console.print(rows)
    for note in notes:
        console.print(f"[yellow]note:[/] {shown(note)}")


def _unlike(
    a: EvalRun, b: EvalRun, trials_a: list[EvalTrial], trials_b: list[EvalTrial]
) -> list[str]:
    """What besides the model differs between two runs, which a reader must weigh."""
    notes = []
    if a.prompt_sha256 != b.prompt_sha256:
        notes.append("the system prompt differs between the runs")
    if a.operator_version != b.operator_version:
        notes.append(f"Operator {a.operator_version} ran {a.id}, {b.operator_version} ran {b.id}")
    files_a = {(t.scenario, t.scenario_sha256) for t in trials_a}
    files_b = {(t.scenario, t.scenario_sha256) for t in trials_b}
    common = {name for name, _ in files_a} & {name for name, _ in files_b}
    for name in sorted(common):
        if {h for n, h in files_a if n == name} != {h for n, h in files_b if n == name}:
            notes.append(f"scenario {name}'s file changed between the runs")
    return notes


def _rate(s: Summary | None) -> str:
    if s is None:
        return "-"
    low, high = s.interval
    return f"{s.successes}/{s.trials} ({low:.0%}-{high:.0%})"


def _ttm(s: Summary | None) -> str:
    return "-" if s is None else f"{_s(s.p('ttm', 0.5))} / {_s(s.p('ttm', 0.9))}"


def _cost(s: Summary | None) -> str:
    return "-" if s is None else f"${s.cost_usd:.2f}"


@app.command()
def report(
    ctx: typer.Context,
    run_id: int = RunArgument,
    html: Path = typer.Option(..., "--html", help="Where to write the report."),
) -> None:
    """Write one self-contained HTML file: the summary, TTD and TTM charts per scenario, and
    every trial's transcript (it opens without a network)."""
    store = app_context(ctx).store
    record, trials = store.eval_run(run_id), store.eval_trials(run_id)
    transcripts = {t.id: transcript_text(store, t.sessions) for t in trials if t.sessions}
    try:
        html.write_text(html_report.render(record, trials, transcripts), encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write {html}: {exc.strerror}") from exc
    err_console.print(f"wrote {html}")
    if not sys.stdout.isatty():
        print(html)
