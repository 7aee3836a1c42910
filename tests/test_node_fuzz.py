"""Fuzz what the technician tools parse: firmware images, the inventory and the settings built from it.

Anything a technician can hand the tools gives a plain NodeToolError or a located ConfigError, never a crash.
"""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.common.problems import ConfigError
from gateway.technician import NodeToolError
from gateway.technician.flash import CHIPS, inspect_bytes
from gateway.technician.provision import load_inventory, node_config, node_settings
from hil.esp32.images import combined_image

IMAGE = combined_image(CHIPS["esp32"].image_id, CHIPS["esp32"].offset)
INVENTORY = (Path(__file__).resolve().parent.parent / "docs" / "technician" / "set-up-a-node.md").read_text()
INVENTORY = INVENTORY[INVENTORY.index("# nodes.yaml") : INVENTORY.index("```", INVENTORY.index("# nodes.yaml"))]
fuzz = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@fuzz
@given(edits=st.lists(st.tuples(st.integers(0, len(IMAGE) - 1), st.integers(0, 255)), min_size=1, max_size=12),
       cut=st.integers(0, len(IMAGE)))  # fmt: skip
def test_damaged_images_are_explained(edits: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(IMAGE)
    for position, value in edits:
        # Aim half the damage at the headers, the partition table and the app descriptor, where it matters.
        target = (
            position if position % 2 else [0, 12, 13, 0x7000 + position % 96, 0xF000 + position % 200][position % 5]
        )
        data[target % len(data)] = value
    try:
        found = inspect_bytes(bytes(data[:cut]), Path("x.bin"))
    except NodeToolError as exc:
        assert str(exc).strip()
    else:
        assert found.project.lower() == "micropython" and found.chip.name in CHIPS


@fuzz
@given(data=st.binary(max_size=9000))
def test_random_bytes_are_not_firmware(data: bytes) -> None:
    try:
        inspect_bytes(data, Path("x.bin"))
    except NodeToolError as exc:
        assert "x.bin" in str(exc)


@fuzz
@given(
    edits=st.lists(
        st.tuples(st.integers(0, 5000), st.sampled_from(["", " ", ":", "-", "{", "}", "]", "0", "x", "\n", "'", "#"])),
        min_size=1,
        max_size=6,
    )
)
def test_mangled_inventory_is_explained(tmp_path: Path, edits: list[tuple[int, str]]) -> None:
    text = INVENTORY
    for position, replacement in edits:
        at = position % (len(text) + 1)
        text = text[:at] + replacement + text[at + 1 :]
    path = tmp_path / "nodes.yaml"
    path.write_text(text)
    try:
        inventory, source = load_inventory(path)
        for node in inventory.nodes:
            node_config(node_settings(inventory, source, node.id), prompt=lambda label: "typed")
    except ConfigError as exc:
        assert exc.problems and all(p.line >= 1 and p.message for p in exc.problems)
