"""JSON Schemas of the profile and configuration formats, for editor autocompletion."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from gateway.config.model import GatewayConfig
from gateway.profiles.model import Profile

SCHEMAS: dict[str, tuple[type[BaseModel], str]] = {
    "profile": (Profile, "CityEdge device profile"),
    "config": (GatewayConfig, "CityEdge gateway configuration"),
}


def json_schema(kind: str) -> dict[str, Any]:
    model, title = SCHEMAS[kind]
    schema = model.model_json_schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://cityedge.invalid/schema/{kind}.schema.json",
        **schema,
        "title": title,
    }
