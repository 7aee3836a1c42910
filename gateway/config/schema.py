"""JSON Schemas of the profile and configuration formats, for editor autocompletion.

Both follow the registered protocols: a profile is one of their profile models (told
apart by `protocol`), and a configuration's links are one of their link models.
"""

from __future__ import annotations

from typing import Any, Union

from pydantic import TypeAdapter

from gateway.config.model import GatewayConfig
from gateway.south.driver import protocols

SCHEMAS = {"profile": "CityEdge device profile", "config": "CityEdge gateway configuration"}  # kind: title


def _profile_schema() -> dict[str, Any]:
    models = tuple(p.profile_model for p in protocols().values())
    union: Any = Union[models]  # noqa: UP007 - a tuple of types
    return TypeAdapter(union).json_schema()


def json_schema(kind: str) -> dict[str, Any]:
    schema = _profile_schema() if kind == "profile" else GatewayConfig.model_json_schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://cityedge.invalid/schema/{kind}.schema.json",
        **schema,
        "title": SCHEMAS[kind],
    }
