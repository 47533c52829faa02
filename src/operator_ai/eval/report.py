"""An eval run as one self-contained HTML page: the header, the summary per scenario, charts
of TTD, TTM and outcomes, every trial, and every transcript. It opens with no network:
plotly.js is inlined once and every figure draws from it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from html import escape

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from operator_ai.eval.stats import Summary, summarize
from operator_ai.store.records import EvalRun, EvalTrial, TrialOutcome

DASH = "\u2013"
"""An en dash: between the ends of a range, or in place of a missing value."""

OUTCOME_COLOURS = {
    TrialOutcome.SUCCESS: "#2e7d32",
    TrialOutcome.NOT_DETECTED: "#757575",
    TrialOutcome.ESCALATED: "#ef8f00",
    TrialOutcome.FAILED: "#c62828",
    TrialOutcome.TIMEOUT: "#6a1b9a",
    TrialOutcome.ERROR: "#37474f",
}

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; color: #1f2328; margin: 0 auto;
       padding: 24px 32px; max-width: 1400px; }
h1 { font-size: 22px; margin: 0 0 12px; }
h2 { font-size: 17px; margin: 32px 0 10px; border-bottom: 1px solid #d0d7de;
     padding-bottom: 4px; }
h3 { font-size: 15px; margin: 0 0 6px; }
h3 a { font-size: 12px; font-weight: normal; margin-left: 8px; }
dl.meta { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin: 0; }
dl.meta dt { color: #59636e; }
dl.meta dd { margin: 0; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { padding: 4px 6px; border-bottom: 1px solid #e5e8eb; text-align: left;
         vertical-align: top; }
th { background: #f6f8fa; font-weight: 600; vertical-align: bottom; }
th.n { text-align: right; }
td.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.name, td.nowrap { white-space: nowrap; }
td.why { min-width: 14em; }
.badge { display: inline-block; padding: 0 7px; border-radius: 9px; color: #fff;
         font-size: 12px; font-weight: 500; white-space: nowrap; margin: 1px 3px 1px 0; }
.muted { color: #59636e; }
.charts { display: grid; grid-template-columns: repeat(2, minmax(0, 1fr)); gap: 16px; }
.chart { border: 1px solid #e5e8eb; border-radius: 6px; padding: 4px; min-width: 0; }
.chart.wide { grid-column: 1 / -1; }
section.trial { margin-top: 28px; }
pre { background: #f6f8fa; border: 1px solid #e5e8eb; border-radius: 6px; padding: 10px;
      max-height: 40em; overflow: auto; white-space: pre-wrap; overflow-wrap: anywhere;
      font: 12px/1.4 ui-monospace, monospace; }
a { color: #0969da; }
"""


def render(run: EvalRun, trials: Sequence[EvalTrial], transcripts: Mapping[int, str]) -> str:
    """The run as one HTML document; ``transcripts`` maps a trial id to its transcript."""
    summaries = summarize(trials)
    title = f"Eval run {run.id} · {run.model}"
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{escape(title)}</title>",
            f"<style>{STYLE}</style>",
            f"<script>{get_plotlyjs()}</script>",
            "</head><body>",
            f"<h1>{escape(title)}</h1>",
            _header(run),
            "<h2>Summary</h2>",
            _summary_table(summaries),
            "<h2>Charts</h2>",
            _charts(summaries),
            '<h2 id="trials">Trials</h2>',
            _trial_table(trials),
            "<h2>Transcripts</h2>",
            *(_trial_section(t, transcripts.get(t.id)) for t in trials),
            "</body></html>",
        ]
    )


def _header(run: EvalRun) -> str:
    return _meta(
        [
            ("Run", str(run.id)),
            ("Model", run.model),
            ("Campaign", run.campaign or DASH),
            ("Started", _when(run.started_at)),
            ("Ended", _when(run.ended_at) if run.ended_at else "not ended"),
            ("Operator", run.operator_version),
            ("Prompt SHA-256", run.prompt_sha256[:12]),
            ("Scenarios", ", ".join(run.scenarios)),
            ("Trials per scenario", str(run.trials)),
            ("Parallel", str(run.parallel)),
        ]
    )


def _summary_table(summaries: Sequence[Summary]) -> str:
    columns = {0: "name", 4: "nowrap"} | dict.fromkeys([1, 2, 3, 5, 6, 7, 8, 9, 10], "n")
    head = ["Scenario", "Trials", "Success", "95% interval", "Outcomes", "TTD p50 (s)"]
    head += ["TTD p90 (s)", "TTM p50 (s)", "TTM p90 (s)", "Cost (USD)", "False positives"]
    rows = []
    for s in summaries:
        low, high = s.interval
        cells = [
            escape(s.scenario),
            str(s.trials),
            f"{s.rate:.0%}",
            f"{low:.0%}{DASH}{high:.0%}",
            "".join(_badge(o, f"{o} {s.outcomes[o]}") for o in TrialOutcome if o in s.outcomes),
            _seconds(s.p("ttd", 0.5)),
            _seconds(s.p("ttd", 0.9)),
            _seconds(s.p("ttm", 0.5)),
            _seconds(s.p("ttm", 0.9)),
            f"{s.cost_usd:.4f}",
            str(s.false_positives),
        ]
        rows.append(_row("td", cells, columns))
    return _table(head, rows, columns)


def _trial_table(trials: Sequence[EvalTrial]) -> str:
    columns = {1: "name", 4: "why"} | dict.fromkeys([0, 2, 5, 6, 7, 8, 9, 10, 11], "n")
    head = ["Trial", "Scenario", "Attempt", "Outcome", "Why", "TTD (s)", "TTM (s)", "Steps"]
    head += ["Commands", "State-changing", "Tokens in / out", "Cost (USD)", "Sessions"]
    rows = []
    for t in trials:
        cells = [
            f'<a href="#trial-{t.id}">{t.id}</a>',
            escape(t.scenario),
            str(t.attempt),
            _badge(t.outcome),
            escape(t.why),
            _seconds(t.ttd_seconds),
            _seconds(t.ttm_seconds),
            str(t.steps),
            str(t.commands),
            str(t.state_changing),
            f"{t.tokens_in:,} / {t.tokens_out:,}",
            f"{t.cost_usd:.4f}",
            escape(", ".join(map(str, t.sessions)) or DASH),
        ]
        rows.append(_row("td", cells, columns))
    return _table(head, rows, columns)


def _trial_section(trial: EvalTrial, transcript: str | None) -> str:
    targets = ", ".join(f"{alias} → {node}" for alias, node in trial.targets.items())
    meta = _meta(
        [
            ("Lab", trial.lab),
            ("Targets", targets or DASH),
            ("Tickets", ", ".join(map(str, trial.tickets)) or DASH),
            ("Sessions", ", ".join(map(str, trial.sessions)) or DASH),
            ("Why", trial.why),
        ]
    )
    body = (
        '<p class="muted">no agent session</p>'
        if transcript is None
        else f"<pre>{escape(transcript)}</pre>"
    )
    return (
        f'<section class="trial" id="trial-{trial.id}">'
        f"<h3>Trial {trial.id} · {escape(trial.scenario)} · attempt {trial.attempt} "
        f'{_badge(trial.outcome)} <a href="#trials">↑ trials</a></h3>'
        f"{meta}{body}</section>"
    )


def _charts(summaries: Sequence[Summary]) -> str:
    charts = [
        ("chart", _distribution(summaries, "ttd", "Time to detect (s)")),
        ("chart", _distribution(summaries, "ttm", "Time to mitigate (s), successful trials")),
        ("chart wide", _outcomes(summaries)),
    ]
    config = {"displaylogo": False, "responsive": True}
    divs = [
        f'<div class="{kind}">'
        f"{fig.to_html(full_html=False, include_plotlyjs=False, config=config)}</div>"
        for kind, fig in charts
    ]
    return f'<div class="charts">{"".join(divs)}</div>'


def _distribution(summaries: Sequence[Summary], measure: str, title: str) -> go.Figure:
    """A horizontal box per scenario with every trial's point; a scenario with no values
    keeps its place on the axis, marked as empty."""
    fig = go.Figure()
    for s in summaries:
        values = s.ttd if measure == "ttd" else s.ttm
        if not values:
            fig.add_annotation(
                y=s.scenario, x=0.5, yref="y", xref="paper", text="no values", showarrow=False
            )
            continue
        fig.add_trace(
            go.Box(
                x=values,
                y=[s.scenario] * len(values),
                name=s.scenario,
                orientation="h",
                boxpoints="all",
                jitter=0.5,
                pointpos=0,
                marker={"size": 7, "opacity": 0.8},
                hovertemplate="%{x:.1f} s<extra>%{y}</extra>",
            )
        )
    _layout(fig, title, summaries)
    fig.update_layout(showlegend=False, xaxis={"title": "seconds", "rangemode": "tozero"})
    return fig


def _outcomes(summaries: Sequence[Summary]) -> go.Figure:
    fig = go.Figure()
    for outcome in TrialOutcome:
        counts = [s.outcomes.get(outcome, 0) for s in summaries]
        if any(counts):
            fig.add_trace(
                go.Bar(
                    x=counts,
                    y=[s.scenario for s in summaries],
                    name=str(outcome),
                    orientation="h",
                    marker_color=OUTCOME_COLOURS[outcome],
                )
            )
    _layout(fig, "Outcomes per scenario", summaries)
    fig.update_layout(
        barmode="stack",
        xaxis={"title": "trials", "dtick": 1},
        legend={"traceorder": "normal"},
    )
    return fig


def _layout(fig: go.Figure, title: str, summaries: Sequence[Summary]) -> None:
    """Scenarios down the side in the summary's order, the chart as tall as they need."""
    fig.update_layout(
        title={"text": title, "font": {"size": 14}, "x": 0.01},
        template="plotly_white",
        height=130 + 44 * len(summaries),
        margin={"l": 10, "r": 20, "t": 44, "b": 44},
        yaxis={
            "type": "category",
            "categoryorder": "array",
            "categoryarray": [s.scenario for s in summaries],
            "autorange": "reversed",
            "automargin": True,
        },
    )


def _meta(rows: Iterable[tuple[str, str]]) -> str:
    cells = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in rows)
    return f'<dl class="meta">{cells}</dl>'


def _table(head: Sequence[str], rows: Iterable[str], columns: Mapping[int, str]) -> str:
    """A table whose columns carry a class each: numbers right-aligned, names on one line."""
    only_numbers = {i: c for i, c in columns.items() if c == "n"}
    return (
        f'<div class="scroll"><table><thead>{_row("th", head, only_numbers)}</thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def _row(tag: str, cells: Sequence[str], columns: Mapping[int, str]) -> str:
    """A row of already-escaped cells."""
    out = (
        f'<{tag} class="{columns[i]}">{cell}</{tag}>' if i in columns else f"<{tag}>{cell}</{tag}>"
        for i, cell in enumerate(cells)
    )
    return f"<tr>{''.join(out)}</tr>"


def _badge(outcome: TrialOutcome, text: str | None = None) -> str:
    colour = OUTCOME_COLOURS.get(outcome, "#37474f")
    return f'<span class="badge" style="background:{colour}">{escape(text or outcome)}</span>'


def _seconds(value: float | None) -> str:
    return DASH if value is None else f"{value:.1f}"


def _when(at: datetime) -> str:
    """ISO 8601 in UTC; a naive time is taken to be UTC already, as the store keeps it."""
    aware = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    return aware.strftime("%Y-%m-%dT%H:%M:%SZ")
