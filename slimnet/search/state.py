"""The resumable search state: written atomically after every scoring round, read back to resume.

A state is keyed on its settings: the model, its channel groups, the budgets, the held-out set's
size, the strategy's options (``options.fingerprint``) and a fingerprint of the supernet's weights
(``slimnet.checkpoint.weights_fingerprint``: parameters and BN buffers, not per-config calibrated
statistics). A state of other weights is stale (the supernet was trained further or replaced):
the search starts afresh and says why. A state of other settings is refused.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from ..checkpoint import weights_fingerprint
from ..space import ChannelConfig
from ..utils import atomic_write_text, json_safe
from .budgets import Budget, SearchError

STATE_VERSION = 2             # 2: settings carry the supernet's weights fingerprint
STATE_KEYS = ("version", "settings", "current", "trajectory", "found", "elapsed_s")


def search_settings(net, budgets: list[Budget], images: int, input_size: int, options: dict,
                    latency_batch: int | None = None) -> dict:
    """What a saved state must match to be resumed; ``options``: the strategy options' fingerprint."""
    return {"model": net.space.model, "arch": {k: v for k, v in net.arch.items()},
            "weights": weights_fingerprint(net),
            "groups": {g.name: [g.min, g.max, g.divisor] for g in net.space},
            "budgets": [[b.kind, b.value] for b in budgets], "images": images, **options, "input_size": input_size,
            **({"latency_batch": latency_batch} if latency_batch is not None else {})}


@dataclass
class SearchState:
    """Where a search stands: its settings, current config, trajectory (one row per applied
    removal), the budgets reached (label -> {step, channels} or None) and the time spent."""

    settings: dict
    current: ChannelConfig
    trajectory: list[dict]
    found: dict[str, dict | None]
    elapsed_s: float = 0.0

    @property
    def finished(self) -> bool:
        return all(v is not None for v in self.found.values())

    def save(self, path: str, elapsed_s: float) -> None:
        state = {"version": STATE_VERSION, "settings": self.settings, "current": dict(self.current.channels),
                 "trajectory": self.trajectory, "found": self.found, "elapsed_s": elapsed_s,
                 "finished": self.finished}
        atomic_write_text(path, json.dumps(json_safe(state), allow_nan=False) + "\n")

    @classmethod
    def resume(cls, path: str, settings: dict, space, log) -> "SearchState | None":
        """The state saved at ``path`` if it belongs to these settings; None (logging why) when
        it is stale; SearchError when it was written by a search with other settings."""
        state = read_state(path)
        reason = stale_state(state, settings["weights"])
        if reason is not None:
            log(f"not resuming {path}: {reason}; starting the search afresh")
            return None
        if state["settings"] != settings:
            raise SearchError(f"{path} was written by a search with other settings (model, budgets, "
                              "images or search options differ); search with --fresh to start over (or delete it)")
        return cls(settings, space.config(state["current"]), state["trajectory"], state["found"],
                   float(state["elapsed_s"]))


def read_state(path) -> dict:
    """A search state file, or SearchError naming it (truncated, not JSON, not a search state)."""
    try:
        with open(path) as f:
            state = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SearchError(f"{path} is truncated or not a search state ({e}); run the search with --fresh to start "
                          "it over (or delete the file)") from None
    except IsADirectoryError:
        raise SearchError(f"{path} is a folder, not a search state file; remove it or search with --out "
                          "elsewhere") from None
    if not isinstance(state, dict) or any(k not in state for k in STATE_KEYS):
        raise SearchError(f"{path} is not a complete search state (expected the keys {', '.join(STATE_KEYS)}); run "
                          "the search with --fresh to start it over (or delete the file)")
    return state


def stale_state(state: dict, fingerprint: str) -> str | None:
    """Why a saved search state does not belong to the supernet whose ``weights_fingerprint`` is
    ``fingerprint`` (None when it does): it was trained further or replaced since, or the state
    predates weight fingerprints."""
    if state.get("version") != STATE_VERSION:
        return (f"it was written by another slimnet version (state version {state.get('version')}, now "
                f"{STATE_VERSION}) without a fingerprint of the supernet's weights")
    old, now = (state.get("settings") or {}).get("weights"), fingerprint
    if old != now:
        return (f"it was searched on other weights (fingerprint {old}, this checkpoint's {now}: the supernet was "
                "trained further or replaced since)")
    return None
