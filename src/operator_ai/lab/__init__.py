"""The lab: real clusters on one machine, their network, their supervisor, and faults."""

from operator_ai.lab.runtime import Lab, Runtime
from operator_ai.lab.state import LabDir, LabNode, LabState, find_lab

__all__ = ["Lab", "LabDir", "LabNode", "LabState", "Runtime", "find_lab"]
