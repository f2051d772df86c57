"""Tracing a model with torch.fx, with errors that name the failing module and node, and the
shapes of every tensor (one forward of a one-image input in eval mode, no gradients)."""
from __future__ import annotations

import os
import traceback
from typing import Iterable

import torch
import torch.fx as fx
import torch.nn as nn
from torch.fx.node import map_aggregate
from torch.fx.passes.shape_prop import _extract_tensor_metadata

from ..errors import TraceError
from . import rules

_TORCH_DIR = os.path.dirname(torch.__file__)


class _Tracer(fx.Tracer):
    """fx's tracer, keeping user-chosen modules as leaves and remembering where tracing was."""

    def __init__(self, leaves: Iterable):
        super().__init__()
        self.leaf_types = tuple(x for x in leaves if isinstance(x, type))
        self.leaf_names = {x for x in leaves if isinstance(x, str)}
        self.stack: list[tuple[str, str]] = []   # (qualified name, class) of the modules being traced
        self.failed_in: tuple[str, str] | None = None
        self.as_plain: dict[str, nn.Module] = {}     # qualified name -> a rules.AS_PLAIN_MODULES module

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if qualname in self.leaf_names or (self.leaf_types and isinstance(m, self.leaf_types)):
            return True
        if type(m).__name__ in rules.PASS_MODULE_NAMES:
            return True
        return super().is_leaf_module(m, qualname)

    def call_module(self, m, forward, args, kwargs):
        self.stack.append((self.path_of_module(m), type(m).__name__))
        try:
            plain = rules.as_plain(m)
            if plain is not None and not self.is_leaf_module(m, self.stack[-1][0]):
                # the standard layer, then each child it calls (traced as usual)
                self.as_plain[self.stack[-1][0]] = m
                out = self.create_proxy("call_module", self.stack[-1][0], args, kwargs)
                for child in plain[1]:
                    sub = getattr(m, child)
                    out = self.call_module(sub, sub.forward, (out,), {})
                return out
            return super().call_module(m, forward, args, kwargs)
        except Exception:
            if self.failed_in is None:
                self.failed_in = self.stack[-1]
            raise
        finally:
            self.stack.pop()


def _user_frame(err: BaseException) -> str:
    """``file:line `code``` of the innermost frame of ``err`` outside torch (the model's code)."""
    frames = [f for f in traceback.extract_tb(err.__traceback__) if not f.filename.startswith(_TORCH_DIR)]
    if not frames:
        return ""
    f = frames[-1]
    return f" at {f.filename}:{f.lineno} `{(f.line or '').strip()}`"


def trace(model: nn.Module, leaf_modules: Iterable = ()) -> fx.GraphModule:
    """``model`` as an fx GraphModule; a clear ``TraceError`` where fx cannot trace it."""
    leaf_modules = list(leaf_modules)
    names = dict(model.named_modules())
    unknown = [x for x in leaf_modules if isinstance(x, str) and x not in names]
    if unknown:
        raise TraceError(f"leaf_modules: {type(model).__name__} has no module {unknown[0]!r}")
    tracer = _Tracer(leaf_modules)
    try:
        graph = tracer.trace(model)
    except Exception as err:
        where = tracer.failed_in or ("", type(model).__name__)
        module = f"module '{where[0]}' ({where[1]})" if where[0] else f"{where[1]}.forward"
        last = list(tracer.graph.nodes)[-1].name if len(tracer.graph.nodes) else "(none)"
        leaf = f"leaf_modules=['{where[0]}']" if where[0] else "leaf_modules=[...] (the untraceable submodule)"
        raise TraceError(
            f"torch.fx cannot trace {type(model).__name__}: {type(err).__name__}: {str(err).splitlines()[0]} "
            f"-- in {module}{_user_frame(err)}, after graph node '{last}'. Data-dependent control flow cannot be "
            f"traced: keep that part as one opaque module with {leaf} (its channels are then fixed), or rewrite "
            "it without Python control flow on tensor values; pin any channel group by hand with fixed=[...]"
        ) from err
    gm = fx.GraphModule(tracer.root, graph, type(model).__name__)
    originals = set(model.modules())
    for name, m in tracer.as_plain.items():
        parent_name, _, field = name.rpartition(".")
        parent = gm.get_submodule(parent_name)
        if parent in originals:         # never change the user's model (fx installs fresh parents)
            raise TraceError(f"cannot trace '{name}' ({type(m).__name__}) as a standard layer; "
                             f"keep it whole with leaf_modules=['{name}'] and fixed=['{name}']")
        setattr(parent, field, _plain_copy(m, *rules.as_plain(m)))
    return gm


def _plain_copy(m: nn.Module, cls: type, children: tuple[str, ...]) -> nn.Module:
    """A ``cls`` (nn.BatchNorm2d, nn.Linear) holding ``m``'s own parameters and buffers (shared, not
    copied), its hyper-parameters, its mode, and the ``children`` the graph calls after it."""
    new = cls.__new__(cls)
    nn.Module.__init__(new)
    for key, value in vars(m).items():
        if not key.startswith("_") and key != "training":
            setattr(new, key, value)        # num_features, eps, momentum, in_features, ...
    for key, value in m._parameters.items():
        new.register_parameter(key, value)
    for key, value in m._buffers.items():
        new.register_buffer(key, value, persistent=key not in m._non_persistent_buffers_set)
    for child in children:
        new.add_module(child, getattr(m, child))
    return new.train(m.training)


def _example(input_size, in_channels: int, model: nn.Module) -> torch.Tensor:
    size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
        raise TraceError(f"input_size must be a positive int or (height, width), got {input_size!r}")
    p = next(model.parameters(), None)
    kw = {} if p is None else {"device": p.device, "dtype": p.dtype}
    return torch.zeros(1, in_channels, *size, **kw)


class _Shapes(fx.Interpreter):
    """Runs the graph, storing each node's output metadata in ``node.meta['tensor_meta']`` (as
    ShapeProp does, but quietly, and failing with the node's name and the original error)."""

    def __init__(self, gm: fx.GraphModule, example: torch.Tensor):
        super().__init__(gm)
        self.example = example
        self.extra_traceback = False      # fx would append the graph node and a traceback to our message

    def run_node(self, n: fx.Node):
        try:
            result = super().run_node(n)
        except Exception as err:
            shape = tuple(self.example.shape)
            raise TraceError(f"running the traced {type(self.module).__name__} on a {shape} input failed at node "
                             f"'{n.name}' ({n.op} {n.target}): {type(err).__name__}: {str(err).splitlines()[0]}") from err
        n.meta["tensor_meta"] = map_aggregate(
            result, lambda x: _extract_tensor_metadata(x) if isinstance(x, torch.Tensor) else x)
        return result


def propagate_shapes(gm: fx.GraphModule, input_size, in_channels: int) -> None:
    """Store every node's output shape in ``node.meta['tensor_meta']`` (one image, eval mode).

    The model's train / eval flags are restored afterwards; BN statistics are not touched (eval)."""
    example = _example(input_size, in_channels, gm)
    modes = {m: m.training for m in gm.modules()}
    gm.eval()
    try:
        with torch.no_grad():
            _Shapes(gm, example).run(example)
    finally:
        for m, mode in modes.items():
            m.training = mode
