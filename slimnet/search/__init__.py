"""Channel search of a universally slimmable supernet (AutoSlim's greedy search by default).

One file per concern:

* ``budgets.py``: :class:`Budget` (MACs, params or measured latency), ``make_budgets``,
  ``check_budgets``, :class:`SearchError`;
* ``costs.py``: the cost metrics (analytic MACs / params; :class:`ChildLatency`, whose clock
  is an injectable ``measure=`` callable);
* ``stages.py``: the model's declared stages (``SlimNet.search_stages()``) for prefix reuse;
* ``scorer.py``: :class:`CandidateScorer` (held-out top-1 / loss of many configs, BN modes);
* ``options.py``: :class:`ScoringOptions` and the ``option()`` fields that also declare flags;
* ``state.py``: the resumable state (``read_state``, ``stale_state``, :class:`SearchState`);
* ``run.py``: :class:`SearchRun`, what every strategy shares, and :class:`SearchResult`;
* ``greedy.py``: the greedy strategy (:class:`GreedyOptions`, :class:`GreedySearch`,
  ``greedy_slim``);
* ``outputs.py``: ``write_outputs`` (file prefix a parameter, default ``autoslim_``);
* ``ranking.py``: ``rank_correlation`` (how well a scoring mode ranks candidates).

A strategy is one file with an options dataclass (derived from ``ScoringOptions``) and a
``SearchRun`` subclass implementing ``iterate()``, registered in :data:`STRATEGIES` below; the
``slimnet autoslim`` command offers every registered strategy (``--strategy``) with its options'
flags. See docs/ARCHITECTURE.md, "How to add a search strategy".

Renamed names keep their old spelling as aliases: ``flops=`` is ``macs=`` (``make_budgets``,
``greedy_slim``; ``--flops`` is ``--macs``), ``pipeline_stages`` is ``model_stages``.
"""
from .budgets import (
    BUDGET_WHAT,
    OUTPUT_PREFIX,
    Budget,
    SearchError,
    check_budgets,
    make_budgets,
)
from .costs import ChildLatency, ConfigCosts
from .greedy import (
    DEFAULT_LEADERS,
    DEFAULT_PRESCREEN,
    DEFAULT_REMOVAL_RATE,
    DEFAULT_REMOVALS,
    GreedyOptions,
    GreedySearch,
    batched_picks,
    greedy_slim,
)
from .options import (
    ScoringOptions,
    add_option_arguments,
    option,
    option_minimums,
    options_from_args,
)
from .outputs import TRAJECTORY_FIELDS, output_names, state_file, write_outputs
from .ranking import rank_correlation
from .run import SearchResult, SearchRun
from .scorer import BN_SCORING, DEFAULT_BN, CandidateScorer, Score, check_searchable
from .stages import model_stages
from .state import STATE_VERSION, SearchState, read_state, stale_state

# name -> strategy (a SearchRun subclass); `slimnet autoslim --strategy NAME`
STRATEGIES: dict[str, type[SearchRun]] = {
    "greedy": GreedySearch,
}

pipeline_stages = model_stages   # old name

__all__ = ["BN_SCORING", "BUDGET_WHAT", "Budget", "CandidateScorer", "ChildLatency", "ConfigCosts", "DEFAULT_BN",
           "DEFAULT_LEADERS", "DEFAULT_PRESCREEN", "DEFAULT_REMOVALS", "DEFAULT_REMOVAL_RATE", "GreedyOptions",
           "GreedySearch", "OUTPUT_PREFIX", "STATE_VERSION", "STRATEGIES", "Score", "ScoringOptions", "SearchError",
           "SearchResult", "SearchRun", "SearchState", "TRAJECTORY_FIELDS", "add_option_arguments", "batched_picks",
           "check_budgets", "check_searchable", "greedy_slim", "make_budgets", "model_stages", "option",
           "option_minimums", "options_from_args", "output_names", "pipeline_stages", "rank_correlation",
           "read_state", "stale_state", "state_file", "write_outputs"]
