"""Integer arithmetic over profile parameters, for addresses like `7000 * line`.

Only integers, parameter names, + - * // % and parentheses are allowed; anything
else is a profile error, never code execution.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Mapping

_BINARY: dict[type[ast.operator], Callable[[int, int], int]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}


MAX_LENGTH = 200


class ExpressionError(ValueError):
    pass


def evaluate(expression: int | str, names: Mapping[str, int]) -> int:
    """Value of an integer or of an arithmetic expression over `names`."""
    if isinstance(expression, int):
        return expression
    if len(expression) > MAX_LENGTH:
        raise ExpressionError(f"expression longer than {MAX_LENGTH} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except (SyntaxError, MemoryError, RecursionError):
        raise ExpressionError(f"cannot parse expression {expression!r}") from None
    return _eval(tree.body, names, expression)


def _eval(node: ast.expr, names: Mapping[str, int], text: str) -> int:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if isinstance(node, ast.Name):
        if node.id not in names:
            known = ", ".join(sorted(names)) or "none"
            raise ExpressionError(f"unknown name '{node.id}' in {text!r} (parameters: {known})")
        return names[node.id]
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left, names, text), _eval(node.right, names, text)
        if isinstance(node.op, ast.FloorDiv | ast.Mod) and right == 0:
            raise ExpressionError(f"division by zero in {text!r}")
        return _BINARY[type(node.op)](left, right)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_eval(node.operand, names, text)
    raise ExpressionError(f"only integers, parameter names and + - * // % are allowed in {text!r}")
