"""Channel groups traced from any CNN's torch.fx graph (``trace_groups``) and the report of what is
slimmable, what is fixed and why (``trace_report``).

Files: ``graph.py`` (fx tracing with clear errors, shapes from one example image), ``unionfind.py``
(the union-find over channel dimensions), ``rules.py`` (the operations the tracer knows),
``derive.py`` and ``slicing.py`` (the walk over the graph applying them), ``groups.py`` (naming the
groups, user pins, refs in slimnet's ref language), ``macs.py``, ``report.py``, ``supernet.py``
(``slimmable``: the supernet with the model's weights).
"""
from .graph import TraceError
from .groups import TracedGroup, TracedGroups, TracedLayer, trace_groups
from .report import TraceReport, trace_report
from .supernet import TracedSupernet, slimmable

__all__ = ["TraceError", "TracedGroup", "TracedGroups", "TracedLayer", "trace_groups", "TraceReport", "trace_report",
           "TracedSupernet", "slimmable"]
