"""Security by default against a real mosquitto: TLS with verification, client certificates, passwords, failover."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import aiomqtt
import yaml

from hil.broker import ClosedPort, MosquittoBroker
from tests.mqtt_harness import Watcher
from tests.waiting import until

ROOT = Path(__file__).resolve().parent.parent


def gateway_file(tmp: Path, mqtt: dict[str, Any]) -> Path:
    path = tmp / "gw.yaml"
    path.write_text(
        yaml.safe_dump(
            {"gateway": {"id": "sec", "health_interval": 1}, "mqtt": mqtt, "store": {"path": str(tmp / "outbox.db")}}
        )
    )
    return path


class Run:
    """`cityedge run` in a subprocess, as systemd would start it."""

    def __init__(self, config: Path, env: dict[str, str] | None = None) -> None:
        self.log = tempfile.TemporaryFile("w+")  # noqa: SIM115  its stderr, readable while it runs; closed by finish()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "-c", str(config)],
            cwd=ROOT,
            env={**os.environ, **(env or {})},
            stdout=subprocess.DEVNULL,
            stderr=self.log,
            text=True,
        )

    def said(self) -> str:
        self.log.seek(0)
        return self.log.read()

    async def until_said(self, text: str, timeout: float = 30) -> None:
        """Wait until the gateway has logged `text` (it started however slow the machine), bounded in time."""
        await until(
            lambda: text in self.said() or self.proc.poll() is not None, timeout, f"the gateway saying {text!r}"
        )

    def finish(self, sig: int = signal.SIGTERM) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        err = self.said()
        self.log.close()
        return self.proc.returncode, err


async def _online(watcher: Watcher, since: int = 0) -> None:
    await watcher.wait_for(
        lambda s: s.topic == "cityedge/sec/status" and s.json() == {"state": "online"},
        timeout=20,
        since=since,
        what="birth",
    )


async def test_tls_with_verification_and_password_from_the_environment(tmp_path: Path) -> None:
    broker = MosquittoBroker(users={"gw": "s3cret-pw"}, tls=True)
    broker.start()
    try:
        config = gateway_file(
            tmp_path,
            {
                "host": "localhost",
                "port": broker.port,
                "username": "gw",
                "password_env": "CE_TEST_PW",
                "tls": {"ca": str(broker.dir / "ca.pem")},
            },
        )
        run = Run(config, {"CE_TEST_PW": "s3cret-pw"})
        received = await _tls_subscribe(broker, "cityedge/sec/status")
        assert received == b'{"state":"online"}'
        code, err = run.finish()
        assert code == 0, err
        assert "s3cret-pw" not in err  # secrets never reach the log
    finally:
        broker.close()


async def _tls_subscribe(broker: MosquittoBroker, topic: str, user: str = "gw", password: str = "s3cret-pw") -> bytes:
    import ssl

    context = ssl.create_default_context(cafile=str(broker.dir / "ca.pem"))
    for _ in range(100):
        try:
            async with aiomqtt.Client(
                "localhost", broker.port, username=user, password=password, tls_context=context
            ) as client:
                await client.subscribe(topic, qos=1)
                async with asyncio.timeout(10):
                    async for message in client.messages:
                        return message.payload  # type: ignore[return-value]
        except aiomqtt.MqttError:
            await asyncio.sleep(0.2)
    raise AssertionError("no message over TLS")


async def test_certificate_verification_is_on_by_default(tmp_path: Path) -> None:
    broker = MosquittoBroker(tls=True)
    broker.start()
    try:
        other_ca = tmp_path / "other"
        other_ca.mkdir()
        from hil.broker import make_test_pki

        make_test_pki(other_ca)  # a CA that did not sign the broker's certificate
        config = gateway_file(
            tmp_path, {"host": "localhost", "port": broker.port, "tls": {"ca": str(other_ca / "ca.pem")}}
        )
        run = Run(config)
        await run.until_said("certificate verify failed")
        code, err = run.finish()
        assert "certificate verify failed" in err
        assert code == 0  # it kept trying until told to stop, it did not crash
    finally:
        broker.close()


async def test_client_certificates(tmp_path: Path) -> None:
    broker = MosquittoBroker(tls=True, require_certificate=True)
    broker.start()
    try:
        pki = broker.dir
        config = gateway_file(
            tmp_path,
            {
                "host": "localhost",
                "port": broker.port,
                "tls": {"ca": str(pki / "ca.pem"), "cert": str(pki / "client.pem"), "key": str(pki / "client.key")},
            },
        )
        run = Run(config)
        import ssl

        context = ssl.create_default_context(cafile=str(pki / "ca.pem"))
        context.load_cert_chain(str(pki / "client.pem"), str(pki / "client.key"))
        for _ in range(100):
            try:
                async with aiomqtt.Client("localhost", broker.port, tls_context=context) as client:
                    await client.subscribe("cityedge/sec/status", qos=1)
                    async with asyncio.timeout(10):
                        async for message in client.messages:
                            assert message.payload == b'{"state":"online"}'
                            break
                    break
            except aiomqtt.MqttError:
                await asyncio.sleep(0.2)
        else:
            raise AssertionError("no birth over mutual TLS")
        assert run.finish()[0] == 0
    finally:
        broker.close()


def test_missing_secret_is_a_clear_configuration_error(tmp_path: Path) -> None:
    config = gateway_file(tmp_path, {"username": "gw", "password_env": "CE_UNSET_VARIABLE"})
    env = {k: v for k, v in os.environ.items() if k != "CE_UNSET_VARIABLE"}
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "run", "-c", str(config)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "environment variable CE_UNSET_VARIABLE is not set" in result.stderr
    assert "Traceback" not in result.stderr


async def test_password_file_and_wrong_password(tmp_path: Path) -> None:
    with MosquittoBroker(users={"gw": "right"}) as broker:
        (tmp_path / "pw").write_text("wrong\n")
        (tmp_path / "pw").chmod(0o600)  # as a password file should be (a readable one is warned about)
        config = gateway_file(tmp_path, {"port": broker.port, "username": "gw", "password_file": str(tmp_path / "pw")})
        run = Run(config)
        await run.until_said("Not authorized")
        code, err = run.finish()
        assert code == 0, err  # refused, retried, stopped cleanly
        assert "Not authorized" in err
        assert "wrong" not in err.replace("wrong password", "")  # the secret itself is never logged


async def test_failover_to_the_next_broker(tmp_path: Path) -> None:
    with MosquittoBroker() as broker:
        watcher = Watcher(broker)
        await watcher.start()
        with ClosedPort() as dead:  # the first broker: nobody listens there, nobody can start listening
            config = gateway_file(tmp_path, {"port": dead.port, "failover": [f"127.0.0.1:{broker.port}"]})
            run = Run(config)
            try:
                await _online(watcher)
            finally:
                assert run.finish()[0] == 0
                await watcher.stop()


async def test_will_on_sigkill_and_offline_on_clean_stop(tmp_path: Path) -> None:
    with MosquittoBroker() as broker:
        watcher = Watcher(broker)
        await watcher.start()
        config = gateway_file(tmp_path, {"port": broker.port, "keepalive": 2})
        run = Run(config)
        await _online(watcher)
        since = len(watcher.seen)
        code, _ = run.finish(signal.SIGKILL)
        assert code == -signal.SIGKILL
        will = await watcher.wait_for(lambda s: s.topic == "cityedge/sec/status", since=since, timeout=15)
        assert will.json() == {"state": "offline"}  # the broker published the Will
        run = Run(config)
        await _online(watcher, since=len(watcher.seen))
        since = len(watcher.seen)
        code, err = run.finish(signal.SIGTERM)
        assert code == 0, err
        bye = await watcher.wait_for(lambda s: s.topic == "cityedge/sec/status", since=since, timeout=5)
        assert bye.json() == {"state": "offline"}
        late = Watcher(broker, ("cityedge/sec/status",))
        await late.start()
        retained = await late.topic("cityedge/sec/status")
        assert retained.retain and retained.json() == {"state": "offline"}
        await late.stop()
        await watcher.stop()


async def test_mqtt_3_1_1(tmp_path: Path) -> None:
    with MosquittoBroker() as broker:
        watcher = Watcher(broker, v5=False)
        await watcher.start()
        run = Run(gateway_file(tmp_path, {"port": broker.port, "protocol": "3.1.1"}))
        try:
            await _online(watcher)
        finally:
            assert run.finish()[0] == 0
            await watcher.stop()
