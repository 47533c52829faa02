"""The distributed rate limiter: a subject system that ships with Operator.

Any number of stateless nodes share one Redis. Each ``POST /check`` runs one Lua script
that trims the key's sliding-window log, counts it against the key's effective limit and
records the request if it fits, atomically, so nodes racing for the last slot never admit
one too many. Nodes register themselves in Redis with a heartbeat; their admin API shows
the registry, the limits (declared in a JSON file, overridable at run time), the counters
and the keys being blocked. See ``store`` for the key layout and ``cli`` for how to run one.
"""

from operator_ai.subjects.ratelimiter.service.app import NodeConfig, create_app
from operator_ai.subjects.ratelimiter.service.limits import (
    DeclaredLimits,
    Limit,
    Source,
    load_limits,
)

__all__ = ["DeclaredLimits", "Limit", "NodeConfig", "Source", "create_app", "load_limits"]
