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

import operator

import torch.fx as fx
import torch.nn as nn

__all__ = ["graph_stages"]


_INPLACE_OPERATORS = {operator.iadd, operator.isub, operator.imul, operator.itruediv, operator.ifloordiv,
                      operator.imod, operator.ipow, operator.iand, operator.ior, operator.ixor}


def _mutates(user: fx.Node, value: fx.Node, modules: dict) -> bool:
    """Whether ``user`` may write into ``value`` in place (``ReLU(inplace=True)``, ``x += y``,
    ``x.relu_()``, ``F.relu(x, inplace=True)``): then ``value`` cannot be a stage's cached input,
    which the search feeds to many candidates."""
    first = user.args[0] if user.args else None
    if user.kwargs.get("inplace") is True:
        return True
    if user.op == "call_module":
        return first is value and getattr(modules.get(user.target), "inplace", False) is True
    if user.op == "call_method":
        return first is value and str(user.target).endswith("_")
    if user.op == "call_function":
        name = getattr(user.target, "__name__", "")
        return first is value and (user.target in _INPLACE_OPERATORS or (name.endswith("_") and not name.startswith("_")))
    return False


def _cut_points(nodes: list[fx.Node], modules: dict) -> list[int]:
    """Indices of the nodes after which their own output is the only live value, and is not
    modified in place later."""
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
        if n.op != "placeholder" and live == {n} and not any(_mutates(u, n, modules) for u in n.users):
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
