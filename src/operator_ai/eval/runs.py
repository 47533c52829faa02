"""A run: one model against scenarios, each tried ``trials`` times, in ``parallel`` labs of
its own; and a campaign: scenarios x models x trials from one file, one run per model.

Each parallel slot owns one lab (`eval-RUN-K`, netns mode as root) and runs its trials one
after another, reusing the lab while it heals. The labs go down when the run ends.
"""

from __future__ import annotations

import hashlib
import queue
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from pydantic import Field, ValidationError

from operator_ai import __version__
from operator_ai.agent.prompts import SYSTEM
from operator_ai.config import Settings
from operator_ai.errors import OperatorError, ScenarioError, UsageError
from operator_ai.eval import scenario as scenarios
from operator_ai.eval.scenario import Scenario, Strict
from operator_ai.eval.trial import Trial
from operator_ai.lab import Lab, LabDir
from operator_ai.lab.state import Progress, quiet
from operator_ai.models.spec import load_model
from operator_ai.store import EvalRun, EvalTrial, Store

NONE = "none"
"""The model spec that runs no agent: what heals by itself, and what the monitor sees."""
PROMPT_SHA256 = hashlib.sha256(SYSTEM.encode()).hexdigest()


def check_model(spec: str, settings: Settings) -> str | None:
    """The spec to run agents with (None for `none`); a bad spec or key fails now."""
    if spec == NONE:
        return None
    load_model(spec, settings).close()
    return spec


def run(
    settings: Settings,
    store: Store,
    chosen: Sequence[Scenario],
    model: str,
    *,
    trials: int = 1,
    parallel: int = 1,
    campaign: str | None = None,
    on_trial: Callable[[EvalTrial], None] = lambda t: None,
    progress: Progress = quiet,
    stop: threading.Event | None = None,
) -> EvalRun:
    """Run every scenario ``trials`` times with ``model``; each trial is kept as it ends.
    ``stop`` ends the run: the trials under way are cleaned up and not kept."""
    if trials < 1 or parallel < 1:
        raise UsageError("--trials and --parallel must be 1 or more")
    if not chosen:
        raise UsageError("no scenario to run", hint="`operator eval scenarios` lists them.")
    agent_model = check_model(model, settings)
    record = store.start_eval_run(
        model=model, campaign=campaign, operator_version=__version__,
        prompt_sha256=PROMPT_SHA256, scenarios=[s.name for s in chosen], trials=trials,
        parallel=parallel,
    )  # fmt: skip
    jobs: queue.Queue[tuple[Scenario, int]] = queue.Queue()
    for scenario in chosen:
        for attempt in range(1, trials + 1):
            jobs.put((scenario, attempt))
    stop = stop or threading.Event()
    # The answer key stays out of the agent's sandbox: every library, and the files run.
    hide = (*scenarios.libraries(), *dict.fromkeys(s.path.resolve() for s in chosen))
    lock = threading.Lock()
    failures: list[BaseException] = []

    def slot(k: int) -> None:
        lab = Lab(LabDir(settings.home, f"eval-{record.id}-{k}"))
        try:
            while not stop.is_set():
                try:
                    scenario, attempt = jobs.get_nowait()
                except queue.Empty:
                    return
                say = _prefixed(progress, f"[{lab.dir.name}] ")
                trial = Trial(settings, store, lab, scenario, record, attempt, agent_model, say,
                              stop, hide)  # fmt: skip
                result = trial.run_trial()
                if result is not None:
                    with lock:
                        on_trial(result)
        except BaseException as exc:  # the store went away, say: end the run, say why
            failures.append(exc)
            stop.set()
        finally:
            try:
                lab.down(quiet)
                lab.wipe()
            except OperatorError as exc:
                progress(f"could not take {lab.dir.name} down: {exc}")

    threads = [
        threading.Thread(target=slot, args=(k,), daemon=True) for k in range(1, parallel + 1)
    ]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            thread.join()
    finally:
        record = store.end_eval_run(record.id)
    if failures:
        raise failures[0]
    return record


def _prefixed(progress: Progress, prefix: str) -> Progress:
    return lambda message: progress(prefix + message)


class Campaign(Strict):
    """scenarios x models x trials, from one YAML file."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=80)
    models: list[str] = Field(min_length=1)
    scenarios: list[str] = Field(default_factory=list)
    """Names or paths (relative to the campaign file); none: the whole built-in library."""
    scenarios_dir: str | None = None
    trials: int = Field(default=1, ge=1)
    parallel: int = Field(default=1, ge=1)


def load_campaign(path: Path) -> tuple[Campaign, list[Scenario]]:
    """The campaign in ``path`` and its scenarios, every one checked before anything runs."""
    _, data = scenarios.read(path, "campaign")
    try:
        campaign = Campaign.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError(
            f"campaign {path}: {scenarios.problems(exc)}",
            hint="A campaign has name, models, and optionally scenarios, scenarios_dir, "
            "trials and parallel (README).",
        ) from exc
    here = path.parent
    names = [str(here / n) if n.endswith(scenarios.SUFFIXES) else n for n in campaign.scenarios]
    folders = [here / campaign.scenarios_dir] if campaign.scenarios_dir else []
    return campaign, scenarios.find(names, folders)
