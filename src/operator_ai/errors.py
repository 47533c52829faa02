"""The one exception tree of Operator.

Every error a user can cause or meet is an ``OperatorError``. Each carries a ``hint``: what
to do next. Foreign exceptions (SQLAlchemy, psycopg, tomllib...) are translated where they
cross into our code, with ``raise Ours(...) from exc``, so the CLI catches only the base.

    OperatorError
    ├── UsageError             a flag or parameter with a value it cannot take (exit 2)
    ├── ConfigError            malformed or invalid settings
    ├── ScenarioError          an eval scenario or campaign file that cannot be used
    └── StoreError             anything about the tickets/sessions/audit database
        ├── StoreUnavailable   cannot open or reach the database (corrupt file, server down)
        ├── SchemaTooNew       the database was migrated by a newer Operator
        ├── NotFound           no ticket or session with that id
        ├── InvalidTransition  the ticket's status does not allow the operation
        └── LeaseLost          the worker no longer holds the ticket's claim
    ├── LabError               the lab cannot be brought up, found, or changed
    │   └── FaultUnsupported   a fault cannot run here (kernel, privileges, mode, binary)
    ├── SubjectError           anything about one subject system
    │   ├── UnknownSubject     no plugin registered under that name
    │   └── SubjectUnreachable no member of the system answered an observation
    ├── ModelError             anything about a language model provider
    │   ├── NoModel            no model configured, or a spec that names no provider
    │   ├── ModelUnavailable   the API kept failing (rate limits, 5xx, overload, network)
    │   └── ModelRejected      the API refused the request for good (auth, bad request)
    └── SandboxError           the sandbox itself cannot start or run a command
"""

from __future__ import annotations


class OperatorError(Exception):
    """Base of every error Operator raises on purpose."""

    hint: str = ""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        if hint is not None:
            self.hint = hint


class UsageError(OperatorError):
    hint = "`--help` on the command lists its flags and the values each takes."


class ConfigError(OperatorError):
    hint = "Fix the setting named above; `operator config show` prints what is in effect."


class ScenarioError(OperatorError):
    hint = 'The README\'s "Measuring an AI operator" describes the scenario keys.'


class StoreError(OperatorError):
    pass


class StoreUnavailable(StoreError):
    hint = "Check --db / OPERATOR_DB; for SQLite, move a damaged file aside and rerun."


class SchemaTooNew(StoreError):
    hint = "Upgrade operator-ai, or point --db at a database this version created."


class NotFound(StoreError):
    hint = "`operator tickets list` and `operator audit list` show the ids that exist."


class InvalidTransition(StoreError):
    hint = "`operator tickets show ID` shows the ticket's status and timeline."


class LeaseLost(StoreError):
    hint = "Another worker or a human took over the ticket; stop working on it."


class LabError(OperatorError):
    hint = "`operator lab status` shows the lab; `operator lab down` cleans up what is left."


class FaultUnsupported(LabError):
    hint = "`operator chaos list` shows which faults run in this lab's mode on this machine."


class SubjectError(OperatorError):
    pass


class UnknownSubject(SubjectError):
    hint = "`operator subjects list` shows the installed subjects."


class SubjectUnreachable(SubjectError):
    hint = "Check that the lab is up (`operator lab status`) and that its nodes are running."


class ModelError(OperatorError):
    pass


class NoModel(ModelError):
    hint = (
        "Set ANTHROPIC_API_KEY and pass --model anthropic:claude-sonnet-5-5, or OPENAI_API_KEY "
        "and --model openai:gpt-4.1; a local server: --model openai:NAME@http://HOST:PORT/v1; "
        "no key at all: --model scripted:PATH.yaml. OPERATOR_MODEL sets a default."
    )


class ModelUnavailable(ModelError):
    hint = "The provider kept failing after retries; the ticket returns to the queue."


class ModelRejected(ModelError):
    hint = "Check the API key and the model name in --model / OPERATOR_MODEL."


class SandboxError(OperatorError):
    hint = "Run `make setup` (it installs bubblewrap), or `operator lab status` for the lab."
