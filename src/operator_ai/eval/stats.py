"""The numbers of a run: per scenario, the success rate with its confidence interval, TTD
and TTM percentiles and cost; and whether two runs differ by more than chance."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from operator_ai.store.records import EvalTrial, TrialOutcome

Z95 = 1.959963984540054
"""The normal quantile of a two-sided 95% interval."""
SIGNIFICANT = 0.05


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion: honest at small n and at 0 or n."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def quantile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile by linear interpolation; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass(frozen=True)
class Summary:
    """One scenario's trials in one run."""

    scenario: str
    trials: int
    """Trials judged: an `error` (the platform broke) says nothing of the model."""
    errors: int
    successes: int
    outcomes: dict[str, int]
    ttd: list[float]
    ttm: list[float]
    """TTM of the successful trials only: a failed trial has no time to mitigate (so a
    model that seldom succeeds may show a short TTM: read it beside the success rate)."""
    cost_usd: float
    false_positives: int

    @property
    def rate(self) -> float:
        return self.successes / self.trials if self.trials else 0.0

    @property
    def interval(self) -> tuple[float, float]:
        return wilson(self.successes, self.trials)

    def p(self, measure: str, q: float) -> float | None:
        return quantile(self.ttd if measure == "ttd" else self.ttm, q)


def summarize(trials: Iterable[EvalTrial]) -> list[Summary]:
    """A summary per scenario, in the order the scenarios first appear."""
    groups: dict[str, list[EvalTrial]] = {}
    for trial in trials:
        groups.setdefault(trial.scenario, []).append(trial)
    return [_summary(name, group) for name, group in groups.items()]


def _summary(scenario: str, trials: list[EvalTrial]) -> Summary:
    outcomes: dict[str, int] = {}
    for trial in trials:
        outcomes[trial.outcome] = outcomes.get(trial.outcome, 0) + 1
    succeeded = [t for t in trials if t.outcome == TrialOutcome.SUCCESS]
    errors = sum(1 for t in trials if t.outcome == TrialOutcome.ERROR)
    return Summary(
        scenario=scenario,
        trials=len(trials) - errors,
        errors=errors,
        successes=len(succeeded),
        outcomes=outcomes,
        ttd=[t.ttd_seconds for t in trials if t.ttd_seconds is not None],
        ttm=[t.ttm_seconds for t in succeeded if t.ttm_seconds is not None],
        cost_usd=sum(t.cost_usd for t in trials),
        false_positives=sum(t.false_positives for t in trials),
    )


def fisher(a_success: int, a_n: int, b_success: int, b_n: int) -> float:
    """Two-sided p-value of Fisher's exact test on two success rates."""
    successes, n = a_success + b_success, a_n + b_n
    if n == 0 or successes in (0, n):
        return 1.0

    def probability(k: int) -> float:
        return math.comb(a_n, k) * math.comb(b_n, successes - k) / math.comb(n, successes)

    observed = probability(a_success)
    low, high = max(0, successes - b_n), min(a_n, successes)
    tables = (probability(k) for k in range(low, high + 1))
    return min(1.0, sum(p for p in tables if p <= observed * (1 + 1e-9)))


def mann_whitney(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p-value of the Mann-Whitney U test (normal approximation, tie-corrected):
    whether one run's times tend to be longer than the other's."""
    n1, n2 = len(a), len(b)
    if n1 == 0 or n2 == 0:
        return 1.0
    ranked = sorted([(v, 0) for v in a] + [(v, 1) for v in b])
    ranks = [0.0] * len(ranked)
    ties = 0.0
    i = 0
    while i < len(ranked):
        j = i
        while j + 1 < len(ranked) and ranked[j + 1][0] == ranked[i][0]:
            j += 1
        for k in range(i, j + 1):
            ranks[k] = (i + j) / 2 + 1
        ties += (j - i + 1) ** 3 - (j - i + 1)
        i = j + 1
    u = (
        sum(r for r, (_, group) in zip(ranks, ranked, strict=True) if group == 0)
        - n1 * (n1 + 1) / 2
    )
    n = n1 + n2
    variance = n1 * n2 / 12 * ((n + 1) - ties / (n * (n - 1)))
    if variance <= 0:
        return 1.0
    z = (abs(u - n1 * n2 / 2) - 0.5) / math.sqrt(variance)
    return min(1.0, math.erfc(max(0.0, z) / math.sqrt(2)))


@dataclass(frozen=True)
class Difference:
    """How one scenario fared in run B against run A."""

    scenario: str
    a: Summary | None
    b: Summary | None
    success_p: float | None
    ttm_p: float | None

    @property
    def changes(self) -> list[str]:
        """What differs beyond chance (p < 0.05), in words."""
        found = []
        if self.a and self.b and self.success_p is not None and self.success_p < SIGNIFICANT:
            way = "rose" if self.b.rate > self.a.rate else "fell"
            found.append(f"success {way} (p={self.success_p:.3f})")
        if self.a and self.b and self.ttm_p is not None and self.ttm_p < SIGNIFICANT:
            way = (
                "longer" if (self.b.p("ttm", 0.5) or 0) > (self.a.p("ttm", 0.5) or 0) else "shorter"
            )
            found.append(f"TTM {way} (p={self.ttm_p:.3f})")
        return found


def compare(a: Iterable[EvalTrial], b: Iterable[EvalTrial]) -> list[Difference]:
    """Each scenario of either run, with the tests of its difference."""
    first = {s.scenario: s for s in summarize(a)}
    second = {s.scenario: s for s in summarize(b)}
    differences = []
    for name in [*first, *(n for n in second if n not in first)]:
        x, y = first.get(name), second.get(name)
        if x is None or y is None:
            differences.append(Difference(name, x, y, None, None))
            continue
        differences.append(
            Difference(
                name, x, y, fisher(x.successes, x.trials, y.successes, y.trials),
                mann_whitney(x.ttm, y.ttm),
            )
        )  # fmt: skip
    return differences
