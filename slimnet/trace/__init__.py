"""Channel groups traced from any CNN's torch.fx graph (``trace_groups``) and the report of what is
slimmable, what is fixed and why (``trace_report``)."""
from .graph import TraceError
from .groups import TracedGroup, TracedGroups, TracedLayer, trace_groups
from .report import TraceReport, trace_report

__all__ = ["TraceError", "TracedGroup", "TracedGroups", "TracedLayer", "trace_groups", "TraceReport", "trace_report"]
