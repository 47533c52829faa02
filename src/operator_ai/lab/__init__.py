"""The lab: real clusters on one machine, their network, their supervisor, and faults."""

from operator_ai.lab.faults import Fault, Injection
from operator_ai.lab.runtime import Lab
from operator_ai.lab.state import LabDir, LabState, Node, find_lab

__all__ = ["Fault", "Injection", "Lab", "LabDir", "LabState", "Node", "find_lab"]
