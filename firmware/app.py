# CityEdge node: measure, buffer on flash, publish, report health, obey validated commands.
# WiFi drops many times a day on a lamp pole: every reading goes to the flash ring first and
# leaves it only when the broker has acknowledged it, so a reset or an outage loses nothing.
import asyncio
import gc
import json
import sys
import time

import machine
import network

import config as cfgmod
import sensors
from mqtt import MQTTClient
from ringbuf import RingBuffer

VERSION = "0.1.0"
BOOTS_FILE = "boots"
STATE_FILE = "state.json"
EARLY = 60  # seconds: a reset before this counts as an early reset
# network.STAT_* of a failed WiFi join (MicroPython's ESP32 port), by what it means
WIFI_FAILURES = {202: "wrong_password", 201: "no_ap_found", 203: "connect_failed", 204: "connect_failed"}
SAFE_AFTER = 3  # early resets in a row before safe mode
EPOCH_OFFSET = 946684800 if time.gmtime(0)[0] == 2000 else 0  # ESP32 counts from 2000
RESET_CAUSES = {
    getattr(machine, "PWRON_RESET", 1): "power_on", getattr(machine, "HARD_RESET", 2): "hard",
    getattr(machine, "WDT_RESET", 3): "watchdog", getattr(machine, "DEEPSLEEP_RESET", 4): "deep_sleep",
    getattr(machine, "SOFT_RESET", 5): "soft",
}


def now_ms():
    return time.time_ns() // 1000000 + EPOCH_OFFSET * 1000


def _read_int(path, default=0):
    try:
        with open(path) as f:
            return int(f.read())
    except (OSError, ValueError):
        return default


def _board_id():
    """The chip's own id (its MAC on an ESP32): which board speaks, whatever node id it was given."""
    try:
        return "".join("%02x" % b for b in machine.unique_id())
    except Exception:
        return None


def _write(path, text):
    with open(path, "w") as f:
        f.write(text)


class Node:
    def __init__(self):
        self.config, self.config_problem = cfgmod.load()
        c = self.config
        self.id = c["id"]
        self.prefix = "%s/%s" % (c["topic"], self.id)
        self.started = time.ticks_ms()
        self.reset_cause = RESET_CAUSES.get(machine.reset_cause(), "unknown")
        # Resets within EARLY s of starting, in a row: a crash loop. The technician tools clear the count
        # before they reset the board, so deploying or provisioning again and again never counts.
        self.early_resets = _read_int(BOOTS_FILE)
        self.safe_mode = self.early_resets >= SAFE_AFTER
        _write(BOOTS_FILE, str(self.early_resets + 1))  # cleared once we have been up for EARLY seconds
        self.safe_reason = None
        if self.safe_mode:
            self.safe_reason = "%d resets in a row within %d s of starting (the last: %s)" % (
                self.early_resets, EARLY, self.reset_cause)
            print("SAFE MODE: " + self.safe_reason + ". Sensors are off; the node only reports its health.")
            print("SAFE MODE: the error before each reset is above on this console. Fix it, then run")
            print("SAFE MODE: cityedge node setup (or deploy) again, which clears the count; or leave the node")
            print("SAFE MODE: up %d s, and the next reset starts it normally." % EARLY)
        state = self._load_state()
        self.seq = state.get("seq", 0) + 10  # the saved number lags by up to 10: skip ahead, never repeat
        self.buffer = RingBuffer("readings.bin", c.get("buffer_slots", 256), 384)
        self.drivers, self.sensor_problems = ([], []) if self.safe_mode else sensors.build(c["sensors"])
        self.sensor_errors = {}
        self.wlan = network.WLAN(network.STA_IF)
        self.wifi_reconnects = -1
        self.mqtt_reconnects = -1
        self.maintenance = False
        self.time_synced = False
        self.link_state = "starting"
        self.link_said = None
        broker = c["broker"]
        self.client = MQTTClient(
            "cityedge-node-" + self.id, broker["host"], broker.get("port", 1883), broker.get("user"),
            broker.get("password"), broker.get("keepalive", 30),
            will=(self.prefix + "/status", b"offline", True, 1),
        )
        self.client.on_message = self._on_message
        self.heartbeat = time.ticks_ms()
        self.wdt = None

    # -- persistence ------------------------------------------------------------------------------

    def _load_state(self):
        try:
            with open(STATE_FILE) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    def _save_seq(self):
        if self.seq % 10 == 0:
            _write(STATE_FILE, json.dumps({"seq": self.seq}))

    # -- network ----------------------------------------------------------------------------------

    def _state(self, state, detail=None):
        """The link's state, on the console (once per change: the technician tools read it there) and in health.
        wrong_password, no_ap_found, connect_failed, connecting, got_ip, broker_refused, broker_unreachable,
        connected."""
        said = (state, detail)
        if said == self.link_said and state in ("connecting", "got_ip", "connected"):
            return  # a failure is said at every attempt: the tools tell a passing hiccup from a lasting one
        self.link_said = said
        self.link_state = state
        ssid, broker = self.config["wifi"]["ssid"], self.config["broker"]
        where = "%s:%s" % (broker["host"], broker.get("port", 1883))
        words = {
            "wrong_password": "wrong password for WiFi %s" % ssid,
            "no_ap_found": "WiFi %s not found (out of range, or its name is wrong)" % ssid,
            "connect_failed": "WiFi %s refused the connection" % ssid,
            "connecting": "connecting to WiFi %s" % ssid,
            "got_ip": "WiFi %s: got address %s" % (ssid, detail),
            "broker_refused": "broker %s refused the login (code %s: %s)" % (
                where, detail, "bad user name or password" if detail == 4 else "not authorized" if detail == 5
                else "refused"),
            "broker_unreachable": "broker %s unreachable (%s)" % (where, detail),
            "connected": "connected to broker %s" % where,
        }
        print("LINK %s: %s" % (state, words.get(state, state)))

    async def _connect_wifi(self):
        if self.wlan.isconnected():
            return True
        self.wifi_reconnects += 1
        self.wlan.active(True)
        wifi = self.config["wifi"]
        self._state("connecting")
        self.wlan.connect(wifi["ssid"], wifi["password"])
        for _ in range(100):
            if self.wlan.isconnected():
                try:
                    address = self.wlan.ifconfig()[0]
                except Exception:
                    address = "?"
                self._state("got_ip", address)
                return True
            failed = WIFI_FAILURES.get(self.wlan.status())
            if failed:  # a definite answer: say it now, not after the full wait
                self._state(failed)
                return False
            await asyncio.sleep_ms(100)
        self._state("no_ap_found")
        return False

    async def _connected(self):
        """A new broker session: subscriptions once, then who we are, at once."""
        self.mqtt_reconnects += 1
        if not self.client.subscriptions:
            await self.client.subscribe(self.prefix + "/cmd", 1)
            await self.client.subscribe(self.prefix + "/maintenance", 1)
            await self.client.subscribe(self.config["topic"] + "/time", 0)
        await self.client.publish(self.prefix + "/status", b"online", True, 1)
        await self.client.publish(self.prefix + "/info", json.dumps(self.info()), True, 1)
        # Health at once, not an interval later: whoever installs the node sees its signal right away.
        await self.client.publish(self.prefix + "/health", json.dumps(self.health()), False, 0)

    async def network_loop(self):
        while not self.config["broker"]["host"]:  # never guess a broker: wait to be provisioned
            print("no broker in config.json")
            await asyncio.sleep(60)
        await self.client.maintain(self._connect_wifi, self._connected, on_state=self._state)

    # -- readings ---------------------------------------------------------------------------------

    async def measure(self):
        values = {}
        self.sensor_errors = {}
        for driver in self.drivers:
            try:
                values.update(await driver.read())
            except Exception as exc:  # one broken sensor must not stop the others
                for key in driver.keys:
                    self.sensor_errors[key] = str(exc) or type(exc).__name__
        self.seq += 1
        self._save_seq()
        reading = {"ts": now_ms(), "seq": self.seq, "values": values}
        if self.sensor_errors:
            reading["errors"] = {k: v[:24] for k, v in self.sensor_errors.items()}
        data = json.dumps(reading).encode()
        if not self.buffer.append(data):  # too long for a slot: the values matter more than the reasons
            reading.pop("errors", None)
            self.buffer.append(json.dumps(reading).encode())

    async def measure_loop(self):
        while True:
            self.heartbeat = time.ticks_ms()
            if not self.safe_mode:
                await self.measure()
            await asyncio.sleep(self.config["interval"])

    async def sender_loop(self):
        """Oldest reading first; it leaves the flash ring only once the broker has acknowledged it."""
        topic = self.prefix + "/telemetry"
        while True:
            reading = self.buffer.peek() if self.client.connected else None
            if reading is None:
                await asyncio.sleep_ms(200)
                continue
            if await self.client.deliver(topic, reading):
                self.buffer.pop()
            else:
                await asyncio.sleep_ms(100)
            gc.collect()

    # -- health, info, time -------------------------------------------------------------------------

    def uptime(self):
        return time.ticks_diff(time.ticks_ms(), self.started) // 1000

    def info(self):
        return {"firmware": VERSION, "hardware": sys.platform, "board": _board_id(),
                "python": "%d.%d.%d" % sys.implementation.version[:3],
                "sensors": [k for d in self.drivers for k in d.keys], "interval": self.config["interval"],
                "safe_mode": self.safe_mode, "safe_mode_reason": self.safe_reason,
                "problems": self.sensor_problems + ([self.config_problem] if self.config_problem else [])}

    def health(self):
        try:
            rssi = self.wlan.status("rssi")
        except Exception:
            rssi = None
        gc.collect()
        return {"ts": now_ms(), "rssi": rssi, "free_heap": gc.mem_free(), "uptime_s": self.uptime(),
                "reset_cause": self.reset_cause, "wifi_reconnects": max(0, self.wifi_reconnects),
                "mqtt_reconnects": max(0, self.mqtt_reconnects), "firmware": VERSION,
                "buffered": len(self.buffer), "dropped": self.buffer.dropped, "safe_mode": self.safe_mode,
                "sensor_errors": self.sensor_errors, "time_synced": self.time_synced, "link": self.link_state}

    async def health_loop(self):
        while True:
            if self.client.connected:
                await self.client.publish(self.prefix + "/health", json.dumps(self.health()), False, 0)
            if self.early_resets and self.uptime() >= EARLY:
                self.early_resets = 0
                _write(BOOTS_FILE, "0")  # up long enough: this boot was not part of a loop
            await asyncio.sleep(self.config["health_interval"])

    def sync_time(self):
        if not self.config["ntp"]:
            return
        try:
            import ntptime  # not on every port: the gateway's clock is the fallback

            ntptime.host = self.config["ntp"]
            ntptime.settime()
            self.time_synced = True
        except Exception:
            pass

    def _set_time(self, ms):
        if self.time_synced:
            return
        try:
            tm = time.gmtime(ms // 1000 - EPOCH_OFFSET)
            machine.RTC().datetime((tm[0], tm[1], tm[2], tm[6] + 1, tm[3], tm[4], tm[5], 0))
            self.time_synced = True
        except Exception:
            pass

    # -- commands ---------------------------------------------------------------------------------

    def _on_message(self, topic, payload, retain):
        if topic.endswith("/maintenance"):
            self.maintenance = payload in (b"1", b"true", b"on")
        elif topic.endswith("/time"):
            try:
                self._set_time(int(json.loads(payload)["ts"]))
            except (ValueError, KeyError, TypeError):
                pass
        elif topic.endswith("/cmd"):
            asyncio.create_task(self._command(payload))

    async def _command(self, payload):
        request_id = None
        try:
            if len(payload) > 1024:
                raise ValueError("command too large")
            request = json.loads(payload)
            if not isinstance(request, dict):
                raise ValueError("a command is a JSON object")
            request_id = request.get("id")
            result = await self._execute(request)
            answer = {"id": request_id, "status": "ok"}
            if result is not None:
                answer["data"] = result
        except (ValueError, TypeError, KeyError) as exc:
            answer = {"id": request_id, "status": "error", "error": str(exc)}
        await self.client.publish(self.prefix + "/cmd/result", json.dumps(answer), False, 1)
        if answer["status"] == "ok" and request.get("cmd") == "reboot":
            await asyncio.sleep_ms(500)
            machine.reset()

    async def _execute(self, request):
        cmd = request.get("cmd")
        if cmd == "ping":
            return {"uptime_s": self.uptime()}
        if cmd == "config":
            changes = cfgmod.check_remote(request.get("set"))
            self.config.update(changes)
            cfgmod.save(self.config)  # persisted atomically before it is applied
            return {k: self.config[k] for k in changes}
        if cmd == "reboot":
            return None
        if cmd == "measure":
            await self.measure()
            return None
        raise ValueError("unknown command %s" % cmd)

    # -- supervision -------------------------------------------------------------------------------

    async def watchdog_loop(self):
        """The watchdog is fed only while the main loop runs and the broker link works (or may yet)."""
        self.wdt = machine.WDT(timeout=max(60000, 3 * self.config["interval"] * 1000))
        offline_since = time.ticks_ms()
        while True:
            main_alive = time.ticks_diff(time.ticks_ms(), self.heartbeat) < (2 * self.config["interval"] + 30) * 1000
            if self.client.connected:
                offline_since = time.ticks_ms()
            link_ok = time.ticks_diff(time.ticks_ms(), offline_since) < 15 * 60 * 1000
            if main_alive and link_ok:
                self.wdt.feed()
            await asyncio.sleep(5)

    async def deep_sleep_cycle(self):
        """Battery nodes: wake, measure, publish, sleep; stay awake while the maintenance flag is set."""
        for _ in range(100):
            if self.client.connected:
                break
            await asyncio.sleep_ms(100)
        await asyncio.sleep_ms(500)  # the retained maintenance flag arrives right after subscribing
        await self.measure()
        for _ in range(100):
            if not len(self.buffer):
                break
            await asyncio.sleep_ms(100)
        if self.client.connected:
            await self.client.publish(self.prefix + "/health", json.dumps(self.health()), False, 1)
            await asyncio.sleep_ms(300)
        if self.maintenance:
            return False
        await self.client.close()
        machine.deepsleep(self.config["interval"] * 1000)
        return True

    async def main(self):
        if self.wlan.isconnected() or await self._connect_wifi():
            self.sync_time()
        tasks = [self.network_loop(), self.client.keep_alive(), self.sender_loop(), self.health_loop(),
                 self.watchdog_loop()]
        for coro in tasks:
            asyncio.create_task(coro)
        if self.config["deep_sleep"] and not self.safe_mode and await self.deep_sleep_cycle():
            return
        await self.measure_loop()


def run():
    asyncio.run(Node().main())
