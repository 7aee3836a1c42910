"""Typed events: the bus delivers subclasses to a base's subscribers, and the catalogue page lists every kind."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

from gateway.core import events
from gateway.core.events import CommandAudited, DeviceOffline, EventBus, LinkUp, Notable

CATALOGUE = (Path(__file__).resolve().parent.parent / "docs" / "operator" / "events.md").read_text()


def _kinds() -> list[type[Notable]]:
    return [c for c in vars(events).values() if isinstance(c, type) and issubclass(c, Notable) and c is not Notable]


def _row(kind: str) -> str:
    found = [line for line in CATALOGUE.splitlines() if line.startswith(f"| `{kind}` |")]
    assert found, f"the catalogue has no row for {kind}"
    return found[0]


def test_every_event_kind_is_in_the_catalogue_with_its_fields() -> None:
    assert len(_kinds()) >= 11
    for cls in _kinds():
        row = _row(cls.kind)
        names = [f.name for f in dataclasses.fields(cls)] if cls is not events.ReloadApplied else ["devices_added"]
        for name in names:
            assert f"`{name}`" in row, f"{cls.kind}: field {name} is not described"


def test_the_catalogue_examples_are_what_the_events_produce() -> None:
    examples = [json.loads(line) for line in re.findall(r"^\{.*\}$", CATALOGUE, re.M)]
    assert len(examples) >= 5
    by_kind = {cls.kind: cls for cls in _kinds()}
    for example in examples:
        cls = by_kind[example.pop("kind")]
        example.pop("ts")
        if cls is events.ReloadApplied:
            assert cls(example).to_json() == example
            continue
        assert cls(**example).to_json() == example  # the example is exactly an event's JSON


def test_a_subscription_to_a_base_receives_its_subclasses_until_undone() -> None:
    bus = EventBus()
    notable: list[Notable] = []
    offline: list[DeviceOffline] = []
    undo = bus.subscribe(Notable, notable.append)
    bus.subscribe(DeviceOffline, offline.append)
    bus.publish(DeviceOffline("meter", "timeout"))
    bus.publish(LinkUp("bus"))
    assert [type(n) for n in notable] == [DeviceOffline, LinkUp] and len(offline) == 1
    undo()
    bus.publish(LinkUp("bus"))
    assert len(notable) == 2


def test_a_command_audit_keeps_a_null_transaction() -> None:
    audit = CommandAudited("lamps", None, "error", error={"code": "bad_json", "message": "not JSON"})
    assert audit.to_json() == {
        "device": "lamps",
        "transaction": None,
        "status": "error",
        "error": {"code": "bad_json", "message": "not JSON"},
    }
