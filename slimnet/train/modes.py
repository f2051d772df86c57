"""Training modes (``train.mode``): what a mode decides, in one class each.

* :class:`Switchable` (``switchable``): S-Nets. A fixed list of widths (or channel JSONs), every
  one each step, private (switchable) BN per entry; ``model.bn: shared`` is the naive shared-BN
  ablation.
* :class:`Universal` (``universal``): US-Nets. The sandwich rule over uniform widths: max + min +
  ``num_random`` random widths in [min_width, max_width] per step; BN statistics are calibrated
  before evaluation.
* :class:`AutoSlim` (``autoslim``): the AutoSlim supernet. Max + min + ``num_random`` per-layer
  random channel configs per step (``space.random``), calibrated BN.
* :class:`Fixed` (``fixed``): one config trained alone, as a *plain child*
  (``build(..., channels=cfg)``: real small tensors, ordinary BatchNorm, no slicing). Its
  checkpoint keeps the supernet format with ``channels`` in the model spec, so ``load_supernet``
  rebuilds exactly that child (``net.is_child``); export it by saving it, not with ``export()``.

A mode has a ``name``, the BN kinds it accepts (``bn_kinds``, the default first; none for a plain
child), whether ``torch.compile`` fits it, and four methods the rest of slimnet asks:
``validate(exp, source)`` and ``validate_eval_widths(exp, source)`` (config validation),
``build(exp, arch) -> (net, TrainPlan)`` (the model and what is trained / evaluated) and
``sampler(net, plan, exp)`` (the configs of each step: ``labels()``, ``configs(step)``). A new mode
is one class here and one line in :data:`MODES`.
"""
from __future__ import annotations

from ..config.checks import check, check_widths, choice
from ..errors import ExperimentConfigError as ConfigError
from ..models import build
from ..ops import use_fast_depthwise_
from ..profile import profile
from ..space import read_channel_json
from .plan import TrainPlan, model_arch, prototype, resolve_entries, spread_configs
from .widths import ListedWidths, SandwichWidths

__all__ = ["TrainingMode", "Switchable", "Sandwich", "Universal", "AutoSlim", "Fixed", "MODES", "get_mode", "compile_modes",
           "build_model"]


class TrainingMode:
    """The interface of a training mode, with what most modes share."""
    name: str = ""
    bn_kinds: tuple[str, ...] = ()      # model.bn values it accepts, the default first
    supports_compile: bool = True
    compile_problem: str = ""           # why torch.compile does not fit (when it does not)

    def validate(self, exp, source: str | None = None) -> None:
        """Mode-specific checks of ``model.bn``, ``model.channels`` and ``train.widths`` (run before
        the widths are checked against the model's range and their paths resolved)."""
        m = exp.model
        check(m.channels is None, "model.channels",
              f"a channel JSON is for train.mode {Fixed.name!r} (this is {self.name!r}); to train several "
              f"searched configs jointly list them in train.widths with mode {Switchable.name!r}")
        if m.bn is not None and m.bn not in self.bn_kinds:
            raise ConfigError(f"model.bn: {m.bn!r} conflicts with train.mode {self.name!r}, which uses "
                              f"{' or '.join(map(repr, self.bn_kinds))} BN; remove model.bn or change the mode")

    def validate_eval_widths(self, exp, source: str | None = None) -> None:
        """Mode-specific checks of a given ``eval.widths`` (before the generic ones)."""

    def build(self, exp, arch: dict):
        """``(net, TrainPlan)``: the model built from ``arch`` (``build()`` arguments) and the plan."""
        raise NotImplementedError

    def sampler(self, net, plan: TrainPlan, exp):
        """The configs of each step: an object with ``labels()`` and ``configs(step)``."""
        return ListedWidths(plan.train_configs)


class Switchable(TrainingMode):
    name = "switchable"
    bn_kinds = ("switchable", "shared")

    def validate(self, exp, source=None) -> None:
        super().validate(exp, source)
        check(len(exp.train.widths) >= 1, "train.widths", "switchable mode needs the list of widths / channel JSONs")

    def validate_eval_widths(self, exp, source=None) -> None:
        if exp.model.bn == "shared":   # one set of running statistics serves any width
            return
        trained = {str(w) for w in exp.train.widths}
        extra = [w for w in check_widths("eval.widths", exp.eval.widths, exp, source) if str(w) not in trained]
        check(not extra, "eval.widths", f"{extra} are not among train.widths; switchable BN only has "
              "statistics for the widths it was trained with")

    def build(self, exp, arch: dict):
        m, widths = exp.model, exp.train.widths
        floats = [w for w in widths if isinstance(w, float)]
        if arch["min_width"] is None and floats:
            arch["min_width"] = min(min(floats), arch["max_width"])
        space = prototype(m.name, arch).space
        configs = resolve_entries(widths, space, "train.widths")
        configs.sort(key=lambda lc: -profile(space, lc[1]).macs)      # the largest is the teacher
        net = build(m.name, **arch, bn=m.bn or self.bn_kinds[0], switchable=[dict(c.channels) for _, c in configs])
        train_configs = [(lab, net.space.config(dict(c.channels))) for lab, c in configs]
        if exp.eval.widths is not None:
            eval_configs = resolve_entries(exp.eval.widths, net.space, "eval.widths")
            eval_configs = [(lab, net.space.config(dict(c.channels))) for lab, c in eval_configs]
        else:
            eval_configs = list(train_configs)
        calibrate = bool(exp.eval.calibrate)      # optional for S-Nets (private BN has running stats)
        return net, TrainPlan(self, train_configs, eval_configs, calibrate)


class Sandwich(TrainingMode):
    """Modes that sample configs between the supernet's ends each step (shared, calibrated BN)."""
    bn_kinds = ("universal",)
    supports_compile = False
    compile_problem = "every step runs new channel counts, so it would recompile every step"

    def validate(self, exp, source=None) -> None:
        super().validate(exp, source)
        check(not exp.train.widths, "train.widths", f"{self.name} mode samples widths in [model.min_width, "
              "model.max_width] each step; remove train.widths (use eval.widths for evaluation)")
        check(exp.eval.calibrate is not False, "eval.calibrate", f"{self.name} mode's universal BN tracks no "
              "statistics in training, so every evaluation calibrates first; remove eval.calibrate: false")

    def build(self, exp, arch: dict):
        net = build(exp.model.name, **arch, bn=exp.model.bn or self.bn_kinds[0])
        if exp.eval.widths is not None:
            eval_configs = resolve_entries(exp.eval.widths, net.space, "eval.widths", check_min=True)
        else:
            eval_configs = spread_configs(net.space, 4)
        return net, TrainPlan(self, [], eval_configs, calibrate=True)     # validate() refused calibrate: false

    def sampler(self, net, plan: TrainPlan, exp):
        largest, smallest, draw = self.ends_and_draw(net.space)
        return SandwichWidths(largest, smallest, draw, exp.train.num_random, exp.experiment.seed)

    def ends_and_draw(self, space):
        """(largest config, smallest config, draw(rng) -> a random config)."""
        raise NotImplementedError


class Universal(Sandwich):
    name = "universal"

    def ends_and_draw(self, space):
        lo, hi = space.min_width, space.max_width
        return space.uniform(hi), space.uniform(lo), lambda rng: space.uniform(rng.uniform(lo, hi))


class AutoSlim(Sandwich):
    name = "autoslim"

    def ends_and_draw(self, space):
        return space.max(), space.min(), space.random


class Fixed(TrainingMode):
    name = "fixed"
    bn_kinds = ()          # a plain child: ordinary BatchNorm, no choice

    def validate(self, exp, source=None) -> None:
        m, widths = exp.model, exp.train.widths
        check(m.bn is None, "model.bn", f"train.mode {self.name!r} trains a plain child with ordinary BatchNorm; "
              "remove model.bn")
        check((m.channels is None) != (len(widths) == 0) and len(widths) <= 1, "train.widths",
              f"train.mode {self.name!r} needs exactly one of model.channels (a channel JSON) or one train.widths entry")

    def validate_eval_widths(self, exp, source=None) -> None:
        raise ConfigError("eval.widths: a fixed child has exactly one config; remove eval.widths")

    def build(self, exp, arch: dict):
        m = exp.model
        if m.channels is not None:
            try:
                data = read_channel_json(m.channels)
            except ValueError as err:
                raise ConfigError(f"model.channels: {err}") from None
            for k in ("max_width", "min_width"):   # the searched supernet's range, so the JSON checks out
                if k in data:
                    arch[k] = data[k]
            entry, key = m.channels, "model.channels"
        else:
            entry, key = exp.train.widths[0], "train.widths"
            if arch["min_width"] is None or arch["min_width"] > entry:
                arch["min_width"] = min(entry, arch["max_width"])
        ((label, child_cfg),) = resolve_entries([entry], prototype(m.name, arch).space, key)
        # a plain child whose depthwise convs train with slimnet's faster kernel (same state dict)
        net = use_fast_depthwise_(build(m.name, **arch, channels=dict(child_cfg.channels)))
        configs = [(label, net.child_config)]
        return net, TrainPlan(self, configs, list(configs), calibrate=False)


MODES: dict[str, TrainingMode] = {
    mode.name: mode for mode in (Switchable(), Universal(), AutoSlim(), Fixed())
}


def get_mode(name: str) -> TrainingMode:
    """The training mode called ``name``; a ConfigError (keyed ``train.mode``) lists the valid
    names otherwise."""
    choice("train.mode", name, MODES)
    return MODES[name]


def compile_modes() -> str:
    """The modes ``torch.compile`` fits, for messages."""
    return " and ".join(sorted(name for name, mode in MODES.items() if mode.supports_compile))


def build_model(exp, num_classes: int, in_channels: int, input_size: int):
    """(net, plan) for the experiment ``exp``, built by its training mode. Widths outside the
    model's range fail here, naming them."""
    mode = get_mode(exp.train.mode)
    return mode.build(exp, model_arch(exp, num_classes, in_channels, input_size))
