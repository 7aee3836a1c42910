"""A real mosquitto broker on a free loopback port, for tests, the demo and `hil run`."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

SETUP_HINT = "mosquitto is not installed: run scripts/setup (or: sudo apt-get install mosquitto)"


def find_mosquitto() -> str | None:
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.access(p, os.X_OK)), None
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ClosedPort:
    """A loopback port held bound but not listening: connecting to it is refused, and no other process
    (a test running in parallel, say) can take it until `release()`."""

    def __init__(self) -> None:
        self._socket: socket.socket | None = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.bind(("127.0.0.1", 0))
        self.port = int(self._socket.getsockname()[1])

    def release(self) -> int:
        """Let a server of ours bind the port now; returns it."""
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        return self.port

    def __enter__(self) -> ClosedPort:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def make_test_pki(directory: Path) -> None:
    """A throw-away CA, a server certificate for 127.0.0.1/localhost and a client certificate (openssl CLI)."""

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60, cwd=directory)

    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=CityEdge test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    )
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name, cn in (("server", "localhost"), ("client", "cityedge-test-client")):
        run(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            f"/CN={cn}",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
        )
        extra = ["-extfile", "san.ext"] if name == "server" else []
        run(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            f"{name}.pem",
            *extra,
        )


def wait_for_port(host: str, port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            return True
        time.sleep(0.02)
    return False


class MosquittoBroker:
    """mosquitto with a temporary configuration; `restart()` keeps the port, so clients can reconnect."""

    def __init__(
        self,
        port: int | None = None,
        *,
        users: dict[str, str] | None = None,
        persistence: bool = False,
        tls: bool = False,
        require_certificate: bool = False,
        acl: str | None = None,
    ):
        binary = find_mosquitto()
        if binary is None:
            raise RuntimeError(SETUP_HINT)
        self.binary = binary
        self.host = "127.0.0.1"
        self.fixed_port = port is not None
        self.port = port or free_port()
        self.users = users or {}
        self.dir = Path(tempfile.mkdtemp(prefix="cityedge-mosquitto-"))
        self.persistence = persistence
        self.tls = tls
        self.require_certificate = require_certificate
        self.acl = acl  # the text of a mosquitto ACL file (with users: each may use only what it grants)
        self.process: subprocess.Popen[bytes] | None = None
        if tls:
            make_test_pki(self.dir)
        self.log = self.dir / "mosquitto.log"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def _config(self) -> Path:
        lines = [
            f"listener {self.port} {self.host}",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "max_queued_messages 100000",
            "set_tcp_nodelay true",
            f"persistence {'true' if self.persistence else 'false'}",
            "autosave_interval 1",
            "autosave_on_changes true",  # with persistence: save after every change, so SIGKILL loses nothing
            f"persistence_location {self.dir}/",
        ]
        if os.geteuid() == 0:  # as root, mosquitto drops to user mosquitto, which cannot read our temp files
            lines.append("user root")
        if self.tls:
            pki = self.dir
            lines += [
                f"cafile {pki / 'ca.pem'}",
                f"certfile {pki / 'server.pem'}",
                f"keyfile {pki / 'server.key'}",
                f"require_certificate {'true' if self.require_certificate else 'false'}",
            ]
        if self.users:
            passwd = self.dir / "passwd"
            passwd.write_text("".join(f"{u}:{p}\n" for u, p in self.users.items()))
            subprocess.run([self._passwd_tool(), "-U", str(passwd)], check=True, capture_output=True, timeout=30)
            lines += ["allow_anonymous false", f"password_file {passwd}"]
            if self.acl is not None:
                (self.dir / "acl").write_text(self.acl)
                lines.append(f"acl_file {self.dir / 'acl'}")
        else:
            lines.append("allow_anonymous true")
        conf = self.dir / "mosquitto.conf"
        conf.write_text("\n".join(lines) + "\n")
        return conf

    def _passwd_tool(self) -> str:
        tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
        if not os.access(tool, os.X_OK):
            raise RuntimeError("mosquitto_passwd is missing: run scripts/setup")
        return tool

    def start(self, timeout: float = 10.0) -> None:
        for _ in range(5):
            if self._start_once(timeout):
                return
            if self.fixed_port:
                break
            self.port = free_port()  # another process took the port between our pick and mosquitto's bind
        raise RuntimeError(f"mosquitto did not start on {self.address}: {self.log.read_text()[-2000:]}")

    def _start_once(self, timeout: float) -> bool:
        conf = self._config()
        mark = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as log:
            process = subprocess.Popen([self.binary, "-c", str(conf)], stdout=log, stderr=log, start_new_session=True)
        self.process = process
        opened = wait_for_port(self.host, self.port, timeout)
        time.sleep(0.05)  # a mosquitto that could not bind exits at once; the port may be someone else's
        refused = b"Address already in use" in self.log.read_bytes()[mark:]
        if opened and process.poll() is None and not refused:
            return True
        self.stop()
        return False

    def stop(self, timeout: float = 5.0) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)

    def kill(self) -> None:
        """SIGKILL: the broker vanishes without a goodbye, as on a power cut."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(5)
        self.process = None

    def restart(self, down_for: float = 0.0, *, kill: bool = False) -> None:
        """Stop (or SIGKILL) and start again on the same port."""
        self.kill() if kill else self.stop()
        if down_for:
            time.sleep(down_for)
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> MosquittoBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
