"""Every error slimnet raises on purpose, in one hierarchy.

``SlimnetError`` is the base: ``except slimnet.SlimnetError`` catches every refusal of bad input
or of an impossible request, never a bug. Each kind also derives from the builtin a caller would
expect (``ValueError`` for bad values, ``RuntimeError`` for a run that cannot go on), so existing
``except ValueError`` code keeps working.

=========================  ====================================================================
``ExperimentConfigError``  a YAML experiment config that is malformed, mistyped or inconsistent
                           (``slimnet.config.ConfigError`` is this class)
``ChannelConfigError``     a channel config that does not fit its channel space
                           (``slimnet.space.ConfigError`` and ``slimnet.ConfigError`` are this class)
``SearchError``            bad search input: budgets, model, data
``NonFiniteError``         a model holding NaN / inf, never written to a checkpoint
``TrainingDiverged``       a non-finite loss: training stopped before the step that would spread it
``TraceError``             a model slimnet cannot trace, or a request the traced model cannot meet
=========================  ====================================================================
"""
from __future__ import annotations

__all__ = ["ChannelConfigError", "ExperimentConfigError", "NonFiniteError", "SearchError", "SlimnetError",
           "TraceError", "TrainingDiverged"]


class SlimnetError(Exception):
    """Base of every error slimnet raises on purpose."""


class ExperimentConfigError(SlimnetError, ValueError):
    """An experiment config that is malformed, mistyped or inconsistent."""


class ChannelConfigError(SlimnetError, ValueError):
    """A channel config that does not fit its channel space."""


class SearchError(SlimnetError, ValueError):
    """Bad search input (budgets, model, data)."""


class NonFiniteError(SlimnetError, ValueError):
    """A model whose parameters or buffers hold NaN / inf: it is never written to a checkpoint."""


class TrainingDiverged(SlimnetError, RuntimeError):
    """A non-finite loss: training stopped before the optimizer step that would spread it."""


class TraceError(SlimnetError, ValueError):
    """A model slimnet cannot trace, or a request the traced model cannot meet."""
