"""A real worker process for the claim tests.

python claim_worker.py drain URL NAME GO_FILE   claim until the queue is empty; print each
                                                claim's ticket ids
python claim_worker.py hold URL NAME LEASE      claim one ticket, print it, then hang
python claim_worker.py decide URL NAME GO_FILE  decide every pending approval; print the won
"""

from __future__ import annotations

import json
import os
import sys
import time

from operator_ai.errors import InvalidTransition
from operator_ai.store import ApprovalStatus, AuditKind, Store


def drain(url: str, name: str, go_file: str) -> None:
    with Store(url) as store:
        store.tickets(limit=1)  # connected and ready to claim: say so, then wait for the rest
        print("ready", flush=True)
        while not os.path.exists(go_file):  # start together, so the claims really contend
            time.sleep(0.01)
        claimed = []
        while (claim := store.claim(name, lease_seconds=600)) is not None:
            claimed.append([t.id for t in claim.tickets])
    print(json.dumps(claimed))


def hold(url: str, name: str, lease: str) -> None:
    store = Store(url)
    claim = store.claim(name, lease_seconds=float(lease))
    assert claim is not None
    print(json.dumps({"ticket": claim.ticket.id, "session": claim.session.id}), flush=True)
    time.sleep(3600)  # the test kills us with SIGKILL while we hold the claim


def append(url: str, session: str) -> None:
    store = Store(url)
    print("appending", flush=True)
    while True:  # the test kills us with SIGKILL in the middle of this
        store.append_audit(int(session), AuditKind.TOOL_RESULT, "x" * 4096, exit_code=0)


def decide(url: str, name: str, go_file: str) -> None:
    """Approve (a name ending in 'a') or deny every pending request, oldest first."""
    with Store(url) as store:
        ids = sorted(a.id for a in store.approvals(ApprovalStatus.PENDING))
        print("ready", flush=True)
        while not os.path.exists(go_file):
            time.sleep(0.01)
        status = ApprovalStatus.APPROVED if name.endswith("a") else ApprovalStatus.DENIED
        won = []
        for approval_id in ids:
            try:
                store.decide_approval(approval_id, status, name, "contended")
                won.append(approval_id)
            except InvalidTransition:
                pass
    print(json.dumps(won))


if __name__ == "__main__":
    {"drain": drain, "hold": hold, "append": append, "decide": decide}[sys.argv[1]](*sys.argv[2:])
