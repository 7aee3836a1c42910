"""Validate parsed YAML against a model and turn every failure into a located, readable Problem."""

from __future__ import annotations

import types
from typing import Any, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from gateway.common.problems import ConfigError, Problem, did_you_mean
from gateway.common.yamlsource import YamlSource

M = TypeVar("M", bound=BaseModel)

# Human descriptions of the regular expressions used in the models.
_PATTERNS = {
    r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$": "use letters, digits, '-', '_' and '.' (at most 64, no spaces or '/')",
    r"^[a-z0-9][a-z0-9-]{0,63}$": "use lowercase letters, digits and '-'",
    r"^[A-Za-z0-9_{}.-]{1,64}$": "use letters, digits, '_', '-', '.' (and {index} in repeat blocks)",
    r"^[a-z_][a-z0-9_]*$": "use lowercase letters, digits and '_'",
}


def validate(source: YamlSource, model: type[M]) -> M:
    """The validated model, or ConfigError listing every problem with its position."""
    if not isinstance(source.data, dict):
        kind = "empty" if source.data is None else f"a {type(source.data).__name__}"
        raise ConfigError(
            [source.problem((), f"expected a mapping of settings at the top level, but the file is {kind}")]
        )
    try:
        return model.model_validate(source.data)
    except ValidationError as exc:
        raise ConfigError(problems_from(source, model, exc.errors())) from None


# A value that fits no member of a union (an integer or an expression, say) fails once per member;
# the member whose type the value has explains it best.
_TYPE_MISMATCH = ("int_parsing", "int_type", "string_type", "float_type", "float_parsing", "bool_type", "none_required")


def problems_from(
    source: YamlSource, model: type[BaseModel], errors: list[ErrorDetails], at: tuple[str | int, ...] = ()
) -> list[Problem]:
    """Located problems for a model's validation errors; `at` is where in the file the model's data sits."""
    problems: list[Problem] = []
    seen: set[tuple[Any, ...]] = set()
    for error in sorted(errors, key=lambda e: e["type"] in _TYPE_MISMATCH):  # stable: order kept otherwise
        loc = tuple(error["loc"])
        is_key = "[key]" in loc
        path = source.resolve((*at, *(p for p in loc if p != "[key]")))
        if error["type"] == "union_tag_invalid":
            path = source.resolve((*path, str((error.get("ctx") or {}).get("discriminator", "")).strip("'")))
        if path in seen:
            continue  # a union reports once per member; the first reason is enough
        seen.add(path)
        problems.append(
            source.problem(path, _message(error, model, loc), key=is_key or error["type"] == "extra_forbidden")
        )
    return problems


def explain(error: ErrorDetails, model: type[BaseModel]) -> str:
    """One validation error in plain words (for settings that come from options rather than a file)."""
    return _message(error, model, tuple(error["loc"]))


def _message(error: ErrorDetails, model: type[BaseModel], loc: tuple[Any, ...]) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    value = error.get("input")
    if kind == "extra_forbidden":
        key = str(loc[-1])
        allowed = _fields_at(model, loc[:-1])
        hint = did_you_mean(key, allowed)
        return f"unknown key '{key}'{hint}" if hint else f"unknown key '{key}' (allowed: {', '.join(sorted(allowed))})"
    if kind == "missing":
        return f"missing required key '{loc[-1]}'"
    if kind == "union_tag_invalid":
        what = str(ctx.get("discriminator", "type")).strip("'")
        return f"unknown {what} {ctx.get('tag')!r}; expected one of {ctx.get('expected_tags')}"
    if kind == "union_tag_not_found":
        return f"missing required key {ctx.get('discriminator')}"
    if kind in ("enum", "literal_error"):
        return f"must be {ctx.get('expected')}, got {value!r}"
    if kind == "string_pattern_mismatch":
        pattern = str(ctx.get("pattern"))
        return f"invalid value {value!r}: {_PATTERNS.get(pattern, 'must match ' + pattern)}"
    if kind in ("value_error", "assertion_error"):
        return str(error["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if kind in ("too_long", "too_short"):
        limit = ctx.get("max_length") if kind == "too_long" else ctx.get("min_length")
        most = "at most" if kind == "too_long" else "at least"
        return f"has {ctx.get('actual_length', '?')} items, {most} {limit} allowed"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"expected a mapping of settings, got {_shown(value)}"
    if kind == "list_type":
        return f"expected a list, got {_shown(value)}"
    message = str(error["msg"]).replace("Input should be", "must be")
    return f"{message}, got {_shown(value)}"


def _shown(value: Any) -> str:
    if isinstance(value, dict | list):
        return "a mapping" if isinstance(value, dict) else "a list"
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def _fields_at(model: type[BaseModel], loc: tuple[Any, ...]) -> set[str]:
    """Field names allowed at `loc`, following models, lists, dicts and tagged unions."""
    candidates: list[Any] = [model]
    for part in loc:
        nxt: list[Any] = []
        for c in _models(candidates):
            if isinstance(part, str) and part in c.model_fields:
                nxt.append(c.model_fields[part].annotation)
            elif isinstance(part, str) and part == _tag_of(c):
                nxt.append(c)
        if not nxt:  # a list index or dict key: step into the containers' items
            nxt = [a for c in candidates for a in _items(c)]
        candidates = nxt
    return {name for c in _models(candidates) for name in c.model_fields}


def _models(annotations: list[Any]) -> list[type[BaseModel]]:
    out: list[type[BaseModel]] = []
    for a in annotations:
        if isinstance(a, type) and issubclass(a, BaseModel):
            out.append(a)
        elif get_origin(a) in (Union, types.UnionType):
            out.extend(_models(list(get_args(a))))
        elif get_args(a) and get_origin(a) not in (list, dict):
            out.extend(_models([get_args(a)[0]]))  # Annotated[...]
    return out


def _items(annotation: Any) -> list[Any]:
    origin = get_origin(annotation)
    if origin is list:
        return [get_args(annotation)[0]]
    if origin is dict:
        return [get_args(annotation)[1]]
    if origin in (Union, types.UnionType) or get_args(annotation):
        return [i for a in get_args(annotation) for i in _items(a)] + [
            a for a in get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel)
        ]
    return []


def _tag_of(model: type[BaseModel]) -> str | None:
    field = model.model_fields.get("type")
    if field is not None and get_origin(field.annotation) is not None:
        args = get_args(field.annotation)
        if len(args) == 1 and isinstance(args[0], str):
            return args[0]
    return None
