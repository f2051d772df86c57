"""A traced graph cut into stages for the search's prefix reuse (``TracedSupernet.search_stages()``).

The graph is cut after every node whose output is then the only live value: the one tensor that
flows from one stage into the next (between ResNet blocks, after each layer of a chain), unless a
later node writes into it in place (the search feeds a stage's cached input to many candidates,
so an in-place activation there would corrupt it for the next one); a part
without slimmable layers (an activation, a pool) joins the stage before it. Each
stage is a ``GraphModule`` over the supernet's own modules (the same objects, so switching
channels switches the stages too), taking that one tensor and returning the next; constants and
parameters read with ``get_attr`` are fetched again by each stage that uses them. Composed in
order, the stages are the forward (the search checks this numerically before it relies on it).
"""
from __future__ import annotations

import inspect
import operator

import torch
import torch.fx as fx
import torch.nn as nn

__all__ = ["graph_stages"]


_INPLACE_OPERATORS = {operator.iadd, operator.isub, operator.imul, operator.itruediv, operator.ifloordiv,
                      operator.imod, operator.ipow, operator.iand, operator.ior, operator.ixor, operator.setitem}
# ops whose result may share memory with their first argument: a write into it writes the argument
_ALIAS_METHODS = {"view", "view_as", "reshape", "flatten", "contiguous", "detach", "to", "type", "float", "expand",
                  "expand_as", "permute", "transpose", "t", "squeeze", "unsqueeze", "narrow", "__getitem__", "chunk",
                  "split", "unbind", "as_strided"}
_ALIAS_FUNCTIONS = {operator.getitem, torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze, torch.transpose,
                    torch.permute, torch.narrow, torch.chunk, torch.split, torch.unbind, torch.detach,
                    nn.functional.dropout, nn.functional.dropout2d}
_ALIAS_MODULES = (nn.Identity, nn.Flatten, nn.Unflatten, nn.modules.dropout._DropoutNd)


def _inplace_flag(node: fx.Node) -> bool:
    """``inplace=True`` given by keyword or position (``F.relu(x, True)``)."""
    if node.kwargs.get("inplace") is True:
        return True
    if node.op != "call_function":
        return False
    try:
        bound = inspect.signature(node.target).bind(*node.args, **node.kwargs)
    except (TypeError, ValueError):
        return False
    return bound.arguments.get("inplace") is True


def _writes_first_argument(node: fx.Node, modules: dict) -> bool:
    if _inplace_flag(node):
        return True
    if node.op == "call_module":
        return getattr(modules.get(node.target), "inplace", False) is True
    if node.op == "call_method":
        return str(node.target).endswith("_")
    if node.op == "call_function":
        name = getattr(node.target, "__name__", "")
        return node.target in _INPLACE_OPERATORS or (name.endswith("_") and not name.startswith("_"))
    return False


def _aliases(node: fx.Node, modules: dict) -> bool:
    if node.op == "call_module":
        return isinstance(modules.get(node.target), _ALIAS_MODULES)
    if node.op == "call_method":
        return node.target in _ALIAS_METHODS
    return node.op == "call_function" and node.target in _ALIAS_FUNCTIONS


def _written_in_place(value: fx.Node, modules: dict) -> bool:
    """Whether any node may write into ``value``'s memory: an in-place op (``ReLU(inplace=True)``,
    ``x += y``, ``x.mul_(2)``, ``F.relu(x, True)``, ``x[i] = y``) on it or on a view / alias of it
    (``x.view(...)``, dropout or identity in eval mode). Such a value cannot be a stage's cached
    input, which the search feeds to many candidates."""
    todo, seen = [value], set()
    while todo:
        v = todo.pop()
        for user in v.users:
            first = user.args[0] if user.args else None
            if first is v and _writes_first_argument(user, modules):
                return True
            if first is v and _aliases(user, modules) and user not in seen:
                seen.add(user)
                todo.append(user)
    return False


def _tensor_valued(node: fx.Node) -> bool:
    """False for a node whose result is a tuple or list (``chunk``, ``split``): read only through
    ``getitem``, it is no tensor a stage can pass on."""
    return not (node.users and all(u.op == "call_function" and u.target is operator.getitem for u in node.users))


def _cut_points(nodes: list[fx.Node], modules: dict) -> list[int]:
    """Indices of the nodes after which their own output is the only live value: a tensor that is
    not written in place later."""
    order = {n: i for i, n in enumerate(nodes)}
    last_use = {n: max((order[u] for u in n.users), default=-1) for n in nodes}
    live: set[fx.Node] = set()
    cuts = []
    for i, n in enumerate(nodes):
        if n.op == "output":
            break
        live = {m for m in live if last_use[m] > i}
        if n.op != "get_attr" and last_use[n] > i:
            live.add(n)
        if n.op != "placeholder" and live == {n} and _tensor_valued(n) and not _written_in_place(n, modules):
            cuts.append(i)
    return cuts


def _merged(cuts: list[int], body: list[fx.Node], gm: fx.GraphModule) -> list[int]:
    """The cuts that open a part holding a slimmable layer (the others' parts join the stage before)."""
    from ..nn import SlimModule

    def slim(node: fx.Node) -> bool:
        return node.op == "call_module" and isinstance(gm.get_submodule(node.target), SlimModule)

    ends = cuts + [len(body) - 1]
    return [c for c, end in zip(cuts, ends[1:]) if any(slim(n) for n in body[c + 1:end + 1])]


def _stage(root: nn.Module, nodes: list[fx.Node], source: fx.Node | None, result: fx.Node) -> fx.GraphModule:
    """The nodes as a graph of one input (``source``'s value; the model's input when None)."""
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    if source is not None:
        env[source] = graph.placeholder("x")

    def arg(node: fx.Node) -> fx.Node:
        if node not in env:          # a get_attr of an earlier stage: fetch it again here
            env[node] = graph.node_copy(node, arg)
        return env[node]

    for node in nodes:
        env[node] = graph.node_copy(node, arg)
    graph.output(env[result])
    return fx.GraphModule(root, graph, f"{type(root).__name__}Stage")


def graph_stages(gm: fx.GraphModule) -> list[fx.GraphModule] | None:
    """The stages of ``gm`` (see the module docstring), or None when it has other than one input
    or no cut point (one stage is the whole forward)."""
    nodes = list(gm.graph.nodes)
    if sum(n.op == "placeholder" for n in nodes) != 1:
        return None
    outputs = [n for n in nodes if n.op == "output"]
    result = outputs[0].args[0]
    if not isinstance(result, fx.Node):
        return None
    body = nodes[:nodes.index(outputs[0])]
    modules = dict(gm.named_modules())
    cuts = _merged([i for i in _cut_points(nodes, modules) if nodes[i] is not result], body, gm)
    if not cuts:
        return None
    stages, start, source = [], 0, None
    for i in cuts + [len(body) - 1]:
        stages.append(_stage(gm, body[start:i + 1], source, body[i] if i < len(body) - 1 else result))
        start, source = i + 1, body[i]
    return stages
