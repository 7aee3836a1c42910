# MQTT 3.1.1 client for MicroPython asyncio: the session kept up (maintain() reconnects with backoff,
# keep_alive() closes a link the broker stopped answering), QoS 0 and 1 (deliver() waits for the PUBACK),
# Will, retransmission after a reconnect.
# Written for a microcontroller: fixed buffers, no allocation in the publish hot path beyond
# the packet itself, and a dead link is found by keepalive, never by trusting the WiFi flag.
import asyncio
import struct
import time

try:
    from typing import Any  # only for the type checker; MicroPython has no typing
except ImportError:
    pass

CONNECT, CONNACK, PUBLISH, PUBACK, SUBSCRIBE, SUBACK = 0x10, 0x20, 0x30, 0x40, 0x82, 0x90
PINGREQ, PINGRESP, DISCONNECT = 0xC0, 0xD0, 0xE0
MAX_PACKET = 4096  # larger packets from the broker are refused: a node has little heap


class MQTTError(Exception):
    pass


def _varint(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | 0x80 if n else byte)
        if not n:
            return out


def _str(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("!H", len(b)) + b


class Refused(MQTTError):
    """The broker answered CONNECT with a refusal: 4 bad user name or password, 5 not authorized."""

    def __init__(self, code):
        super().__init__("connection refused: %s" % code)
        self.code = code


class MQTTClient:
    def __init__(self, client_id, host, port=1883, user=None, password=None, keepalive=30,
                 will=None, max_unacked=16):
        self.client_id = client_id
        self.host, self.port = host, port
        self.user, self.password = user, password
        self.keepalive = keepalive
        self.will = will  # (topic, payload, retain, qos)
        self.max_unacked = max_unacked
        self.unacked = {}  # pid -> (topic, payload, retain): resent with DUP after a reconnect
        self.pid = 0
        self.reader = None  # type: Any
        self.writer = None  # type: Any
        self.connected = False
        self.last_rx = time.ticks_ms()
        self.on_message = None  # callback(topic: str, payload: bytes, retain: bool)
        self.subscriptions = []
        self._lock = asyncio.Lock()

    async def connect(self, timeout=10):
        self.reader, self.writer = await asyncio.wait_for(asyncio.open_connection(self.host, self.port), timeout)
        flags = 0x02  # clean session: the node resends what it has, the broker keeps nothing for it
        payload = _str(self.client_id)
        if self.will:
            topic, msg, retain, qos = self.will
            flags |= 0x04 | (qos << 3) | (0x20 if retain else 0)
            payload += _str(topic) + _str(msg)
        if self.user:
            flags |= 0x80
            payload += _str(self.user)
            if self.password:
                flags |= 0x40
                payload += _str(self.password)
        var = _str("MQTT") + bytes((4, flags)) + struct.pack("!H", self.keepalive)
        await self._send(CONNECT, var + payload)
        kind, body = await asyncio.wait_for(self._read_packet(), timeout)  # type: int, bytes
        if kind != CONNACK or len(body) < 2 or body[1] != 0:
            raise Refused(body[1] if len(body) > 1 else None)
        self.connected = True
        self.last_rx = time.ticks_ms()
        for topic, qos in self.subscriptions:
            await self._subscribe(topic, qos)
        for pid in sorted(self.unacked):  # what the broker never acknowledged goes again
            topic, msg, retain = self.unacked[pid]
            await self._publish(topic, msg, retain, 1, pid, dup=True)

    async def _send(self, kind, body):
        self.writer.write(bytes((kind,)) + _varint(len(body)) + body)
        await self.writer.drain()

    async def _read_packet(self):
        # type: () -> tuple
        head = await self.reader.readexactly(1)
        length, shift = 0, 0
        while True:
            byte = (await self.reader.readexactly(1))[0]
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
            if shift > 21:
                raise MQTTError("bad packet length")
        if length > MAX_PACKET:
            raise MQTTError("packet of %d bytes is too large" % length)
        body = await self.reader.readexactly(length) if length else b""
        self.last_rx = time.ticks_ms()
        return head[0], body

    async def subscribe(self, topic, qos=1):
        self.subscriptions.append((topic, qos))
        if self.connected:
            await self._subscribe(topic, qos)

    async def _subscribe(self, topic, qos):
        self.pid = self.pid % 65535 + 1
        await self._send(SUBSCRIBE, struct.pack("!H", self.pid) + _str(topic) + bytes((qos,)))

    async def publish(self, topic, msg, retain=False, qos=0):
        """QoS 1 messages stay in `unacked` until their PUBACK; False if the window is full."""
        if qos and len(self.unacked) >= self.max_unacked:
            return False
        pid = 0
        if qos:
            self.pid = self.pid % 65535 + 1
            pid = self.pid
            self.unacked[pid] = (topic, msg, retain)
        if self.connected:
            await self._publish(topic, msg, retain, qos, pid)
        return True

    async def deliver(self, topic, msg, retain=False, timeout_ms=10000):
        """Publish with QoS 1 and wait for the broker's PUBACK: True once acknowledged, False when the
        window is full, the link is down or no PUBACK came in time (the message is then resent with DUP
        after the next connect, so the caller may keep its copy and try again)."""
        if not self.connected or not await self.publish(topic, msg, retain, 1):
            return False
        pid = self.pid
        start = time.ticks_ms()
        while pid in self.unacked and self.connected and time.ticks_diff(time.ticks_ms(), start) < timeout_ms:
            await asyncio.sleep_ms(50)
        return pid not in self.unacked

    async def maintain(self, link_up, on_connect, backoff_max=60, on_state=None):
        """Keep the session up for ever: `await link_up()` (the WiFi) before each attempt, connect (which
        renews the subscriptions and resends what is unacknowledged), `await on_connect()` (the owner's birth
        messages), then read until the link breaks. Failed attempts back off, doubling to backoff_max s.
        `on_state(state, detail)` hears why: broker_refused (its CONNACK code), broker_unreachable, connected."""
        backoff = 1
        while True:
            try:
                if not self.alive() and await link_up():
                    await self.close()
                    try:
                        await self.connect()
                    except Refused as exc:
                        if on_state:
                            on_state("broker_refused", exc.code)
                        raise
                    except Exception as exc:
                        if on_state:
                            on_state("broker_unreachable", str(exc) or type(exc).__name__)
                        raise
                    if on_state:
                        on_state("connected", None)
                    await on_connect()
                    backoff = 1
                    await self.run()  # returns only by raising when the link breaks
            except Exception as exc:  # a dropped link is normal life on a pole
                print("link:", exc)
            self.connected = False
            await asyncio.sleep(backoff)
            backoff = min(backoff_max, backoff * 2)

    async def keep_alive(self):
        """Ping every half keepalive while connected; a link the broker no longer answers is closed,
        whatever the WiFi flag says, so the owner's connect loop makes a new one. Runs for ever."""
        while True:
            await asyncio.sleep(max(1, self.keepalive // 2))
            if not self.connected:
                continue
            if not self.alive():
                await self.close()
                continue
            try:
                await self.ping()
            except Exception:
                await self.close()

    async def _publish(self, topic, msg, retain, qos, pid, dup=False):
        kind = PUBLISH | (qos << 1) | (0x08 if dup else 0) | (0x01 if retain else 0)
        body = _str(topic) + (struct.pack("!H", pid) if qos else b"") + (msg.encode() if isinstance(msg, str) else msg)
        async with self._lock:
            await self._send(kind, body)

    async def ping(self):
        async with self._lock:
            await self._send(PINGREQ, b"")

    def alive(self):
        """Heard from the broker within 1.5 keepalives (PINGRESP counts): the link works."""
        return self.connected and time.ticks_diff(time.ticks_ms(), self.last_rx) < self.keepalive * 1500

    async def run(self):
        """Read packets until the link breaks; raises so the caller reconnects."""
        while True:
            kind, body = await self._read_packet()
            kind_type = kind & 0xF0
            if kind_type == PUBLISH:
                qos = (kind >> 1) & 3
                tlen = struct.unpack("!H", body[:2])[0]
                topic = body[2 : 2 + tlen].decode()
                offset = 2 + tlen
                if qos:
                    pid = body[offset : offset + 2]
                    offset += 2
                    async with self._lock:
                        await self._send(PUBACK, pid)
                if self.on_message:
                    self.on_message(topic, body[offset:], bool(kind & 1))
            elif kind_type == PUBACK:
                self.unacked.pop(struct.unpack("!H", body[:2])[0], None)

    async def close(self):
        self.connected = False
        if self.writer:
            try:
                self.writer.close()
                await self.writer.wait_closed()
            except Exception:
                pass
        self.reader = self.writer = None
