"""Subjects: the systems Operator watches, each a plugin found through one entry-point group.

A subject owns everything about one system: how the lab starts its nodes, how to observe
it, its invariants, its own faults, its load generator, and the briefing the agent reads.
Built-in subjects register through the same group, ``operator_ai.subjects``, that third
parties use (``plugins.load_subject``), so adding one touches no core file. The protocol
they implement is ``core.Subject``.
"""
