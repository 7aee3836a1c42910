"""Node profiles (`protocol: node`): the telemetry key each point arrives under, and nothing else.

Node readings arrive as typed JSON, so a node point has no address, codec or limits:
only `key`, the name in the node's `values` (the point's own name by default).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from gateway.points.types import NUMERIC_TYPES, DataType
from gateway.profiles.model import PointFields, Profile, profile_model
from gateway.south.driver import ProfileProtocol, Report, register

if TYPE_CHECKING:
    from gateway.profiles.expand import PointSpec


class NodePoint(PointFields):
    key: str | None = Field(None, description="the telemetry key carrying this point (default: its name)")


NodeProfile = profile_model("node", NodePoint, NodePoint)


@dataclass(frozen=True, slots=True)
class NodeKey:
    key: str  # the point's key in a node's telemetry `values`


class NodeProtocol(ProfileProtocol):
    name: ClassVar[str] = "node"
    source: ClassVar[str] = "node"
    section: ClassVar[str] = "nodes"
    profile_model = NodeProfile
    point_fields = NodePoint
    types = NUMERIC_TYPES | {DataType.BOOL, DataType.STRING, DataType.ENUM}

    def default_type(self, fields: Mapping[str, Any]) -> DataType:
        return DataType.FLOAT64

    def attributes(self, profile: Profile, name: str, fields: dict[str, Any], base: int, bad: Report) -> NodeKey:
        return NodeKey(fields.get("key") or name)

    def columns(self, profile: Profile, point: PointSpec) -> dict[str, Any]:
        key: NodeKey = point.attributes
        return {"key": key.key}


register(NodeProtocol())
