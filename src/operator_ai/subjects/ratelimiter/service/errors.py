"""The rate limiter service's own exception tree. The service is a subject system, not part
of Operator, so it shares none of Operator's errors.

Each error carries a ``hint``: what to do next. redis-py's exceptions are translated in
``store``, where they cross into the service, with ``raise Ours(...) from exc``.

    LimiterError             every error the service raises on purpose
    ├── InvalidConfig        a bad flag, limits file or Redis URL: the node does not start
    └── RedisFailed          Redis answered with an error (e.g. a key of the wrong type)
        └── RedisUnavailable Redis did not answer in time, or refused the connection
"""

from __future__ import annotations


class LimiterError(Exception):
    """Base of every error the rate limiter service raises on purpose."""

    hint: str = ""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        if hint is not None:
            self.hint = hint


class InvalidConfig(LimiterError):
    hint = "`--help` lists the flags and the values each takes."


class RedisFailed(LimiterError):
    hint = "Inspect the key named in the message with redis-cli (TYPE, ZRANGE, HGETALL)."


class RedisUnavailable(RedisFailed):
    hint = "Check that Redis is running and reachable at the --redis URL."
