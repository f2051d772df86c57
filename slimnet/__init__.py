"""slimnet: slimmable networks, universally slimmable training, AutoSlim search and export."""
from .calibrate import calibrate_bn
from .checkpoint import load_supernet, save_checkpoint
from .errors import ChannelConfigError, ExperimentConfigError, SlimnetError
from .export import export, load_child, save_child
from .models import MODELS, SlimNet, build
from .profile import Cost, measure_latency, profile
from .reorder import reorder_channels
from .space import (
           ChannelConfig,
           ChannelGroup,
           ChannelSpace,
           ConfigError,
           make_divisible,
)
from .trace import TracedSupernet, TraceError, TraceReport, slimmable, trace_groups, trace_report

__version__ = "0.1.0"
__all__ = ["build", "calibrate_bn", "MODELS", "SlimNet", "profile", "Cost", "measure_latency", "export", "save_child",
           "load_child", "load_supernet", "save_checkpoint", "ChannelConfig", "ChannelGroup", "ChannelSpace",
           "ConfigError", "make_divisible", "SlimnetError", "ExperimentConfigError", "ChannelConfigError",
           "trace_groups", "trace_report", "TraceReport", "TraceError", "slimmable", "TracedSupernet", "reorder_channels"]
# ConfigError: the channel-config error (ChannelConfigError), as always; the experiment-config
# error is ExperimentConfigError (slimnet.config.ConfigError). Both derive from SlimnetError.
