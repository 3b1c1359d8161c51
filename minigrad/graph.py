"""Seeing the computational graph.

``format_graph(t)`` returns a text tree of every node that ``t`` depends on:
the op that made it, its output shape and the norm of its gradient (when one
is known: leaves after backward, and tensors that kept theirs through
``retain_grad()`` or ``minigrad.retain_grads()``).  ``to_dot(t)`` writes the
same graph in Graphviz's DOT language for drawing, if graphviz is installed.

The graph is freed by ``backward()``: to print gradients on every node, build
the graph inside ``with minigrad.retain_grads():`` and call
``loss.backward(retain_graph=True)``.
"""
from __future__ import annotations

import numpy as np

from . import backend


def _label(t):
    op = t._ctx.name if t._ctx is not None else ("Parameter" if t.requires_grad else "Constant")
    if t.name:
        op = f"{op} '{t.name}'"
    gnorm = ""
    if t.grad is not None:
        gnorm = f"  |grad|={float(np.linalg.norm(backend.to_numpy(t.grad.data))):.4g}"
    return f"{op}  {tuple(t.shape)} {t.dtype}{gnorm}"


def _inputs(t):
    fn = t._ctx
    if fn is None or getattr(fn, "freed", False):
        return ()
    return fn.inputs


def format_graph(root, max_nodes=500) -> str:
    """An indented text view of the graph ending at ``root`` (output first).

    A node reached a second time is printed once and then referred to as
    ``(see #k)``, so shared sub-graphs (shortcuts) stay readable.
    """
    ids, lines = {}, []
    stack = [(root, 0)]
    while stack and len(lines) < max_nodes:
        t, depth = stack.pop()
        pad = "  " * depth
        if id(t) in ids:
            lines.append(f"{pad}(see #{ids[id(t)]})")
            continue
        ids[id(t)] = len(ids)
        lines.append(f"{pad}#{ids[id(t)]} {_label(t)}")
        if t._ctx is not None and getattr(t._ctx, "freed", False):
            lines.append(f"{pad}  (graph freed by backward; use retain_graph=True)")
        for parent in reversed(_inputs(t)):
            stack.append((parent, depth + 1))
    if stack:
        lines.append(f"... ({len(stack)} more nodes not shown)")
    return "\n".join(lines)


def print_graph(root, max_nodes=500):
    print(format_graph(root, max_nodes))


def to_dot(root) -> str:
    """The graph as Graphviz DOT source (render with ``dot -Tpng``)."""
    seen, edges, nodes = {}, [], []
    stack = [root]
    while stack:
        t = stack.pop()
        if id(t) in seen:
            continue
        seen[id(t)] = f"n{len(seen)}"
        nodes.append(f'  {seen[id(t)]} [label="{_label(t)}"];')
        stack.extend(_inputs(t))
    stack, done = [root], set()
    while stack:
        t = stack.pop()
        if id(t) in done:
            continue
        done.add(id(t))
        for parent in _inputs(t):
            edges.append(f"  {seen[id(parent)]} -> {seen[id(t)]};")
            stack.append(parent)
    return "digraph minigrad {\n  rankdir=BT;\n" + "\n".join(nodes + edges) + "\n}\n"
