"""The incident a session works: its tickets as the model last heard of them, what it is
told first, and what has changed since."""

from __future__ import annotations

from dataclasses import dataclass

from operator_ai.agent.prompts import broken_again, holds, incident_prompt, joined
from operator_ai.store import Claim, Store, Ticket


@dataclass
class Incident:
    store: Store
    session: int
    known: dict[int, Ticket]
    """Each ticket as the model last heard of it."""

    @classmethod
    def claimed(cls, store: Store, claim: Claim) -> Incident:
        return cls(store, claim.session.id, {t.id: t for t in claim.tickets})

    @property
    def keys(self) -> str:
        return ", ".join(t.key for t in self.known.values())

    def first_message(self, snapshot: str) -> str:
        """Every ticket with its timeline, the snapshot, and the history of their keys."""
        tickets = list(self.known.values())
        events = {t.id: self.store.events(t.id) for t in tickets}
        # An incident's id is its first ticket's, which a ticket reopened later may reuse for a
        # new incident: the old one's tickets were all closed by then.
        began = min(
            max(e.at for e in events[t.id] if e.kind in ("opened", "reopened")) for t in tickets
        )
        whole = self.store.incident(tickets[0].incident_id) if tickets[0].incident_id else []
        cleared = [
            t
            for t in whole
            if t.id not in self.known
            and t.resolved_by == "monitor"
            and t.resolved_at is not None
            and t.resolved_at >= began
        ]
        return incident_prompt(tickets, events, snapshot, self.history(), cleared)

    def history(self) -> list[str]:
        """The last verified fix of each of the incident's keys, dated."""
        lines = {}
        for ticket in self.known.values():
            last = self.store.last_fix(ticket)
            if last is not None and last[0].id not in lines:
                session, said = last
                ended = f"{session.ended_at:%Y-%m-%d %H:%M} UTC" if session.ended_at else "?"
                lines[session.id] = f"{ended}, {ticket.key}, resolved and verified: {said}"
        return list(lines.values())

    def held(self) -> list[Ticket]:
        """The tickets the session holds now, as the store has them."""
        return self.store.session_tickets(self.session)

    def news(self) -> str:
        """What changed since the model last heard: tickets that joined, tickets the monitor
        now sees hold, or broken again. Each is told once."""
        news = []
        for ticket in self.held():
            before = self.known.get(ticket.id)
            if before is None:
                news.append(joined(ticket, self.store.events(ticket.id)))
            elif ticket.cleared_at is not None and before.cleared_at is None:
                news.append(holds(ticket))
            elif ticket.cleared_at is None and before.cleared_at is not None:
                news.append(broken_again(ticket))
            else:
                continue
            self.known[ticket.id] = ticket
        return "\n\n".join(news)

    def told(self, tickets: list[Ticket]) -> None:
        """The model was told how these tickets stand (a verification that failed); one that
        joined is still to be introduced by the next news."""
        self.known.update((t.id, t) for t in tickets if t.id in self.known)
