# Fake `machine` for running the node firmware on the MicroPython unix port.
# Only the hardware edges are fake: pins, I2C devices, ADC, watchdog, RTC, resets. Sensor values
# come from a JSON file the test harness writes (CITYEDGE_HW, re-read on every access).
import json
import os
import sys
import time

from exits import (  # noqa: F401 - the reset causes are machine's constants
    DEEPSLEEP_RESET,
    EXIT_DEEPSLEEP,
    EXIT_RESET,
    EXIT_SOFT,
    EXIT_WATCHDOG,
    HARD_RESET,
    PWRON_RESET,
    SOFT_RESET,
    WDT_RESET,
)


def _hw():
    try:
        with open(os.getenv("CITYEDGE_HW") or "hw.json") as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _exit(code):
    """The chip resets: tell the harness why on stderr first (the exit status alone can be lost to a late
    Ctrl-C in the interpreter that hosts MicroPython), then leave."""
    sys.stderr.write("EXIT %d\n" % code)
    sys.exit(code)


def reset_cause():
    return int(os.getenv("CITYEDGE_RESET_CAUSE") or PWRON_RESET)


def reset():
    sys.stdout.write("machine.reset\n")
    _exit(EXIT_RESET)


def soft_reset():
    _exit(EXIT_SOFT)


def deepsleep(ms=0):
    sys.stdout.write("machine.deepsleep %d\n" % ms)
    _exit(EXIT_DEEPSLEEP)


def time_pulse_us(pin, level, timeout_us=1000000):
    us = _hw().get("echo_us")
    return -2 if us is None else int(us)


class Pin:
    IN, OUT = 1, 3
    IRQ_RISING, IRQ_FALLING = 1, 2

    def __init__(self, pin, mode=IN, value=None):
        self.id = pin
        self._value = value or 0
        self.handler = None

    def value(self, v=None):
        if v is None:
            return int(_hw().get("pins", {}).get(str(self.id), self._value))
        self._value = v
        return None

    def irq(self, trigger=IRQ_RISING, handler=None):
        self.handler = handler


class I2C:
    """Devices answer from the hardware file: {"i2c": {"35": {"read": "hex"}, "118": {"regs": {"136": "hex"}}}}."""

    def __init__(self, bus=0, sda=None, scl=None, freq=100000):
        self.bus = bus

    def _dev(self, address):
        dev = _hw().get("i2c", {}).get(str(address))
        if dev is None:
            raise OSError(19)  # ENODEV: nothing answers at that address
        return dev

    def writeto(self, address, data):
        self._dev(address)
        return len(data)

    def readfrom(self, address, n):
        return bytes.fromhex(self._dev(address).get("read", ""))[:n]

    def writeto_mem(self, address, reg, data):
        self._dev(address)

    def readfrom_mem(self, address, reg, n):
        regs = self._dev(address).get("regs", {})
        return bytes.fromhex(regs.get(str(reg), "00" * n))[:n]


class ADC:
    def __init__(self, pin):
        self.pin = pin

    def read_u16(self):
        return int(_hw().get("adc", {}).get(str(self.pin.id), 0))


class WDT:
    """Reset the process when not fed within the timeout, like the hardware watchdog."""

    def __init__(self, id=0, timeout=5000):
        self.timeout = timeout
        self.fed = time.ticks_ms()
        _WDTS.append(self)

    def feed(self):
        self.fed = time.ticks_ms()


_WDTS = []


def check_watchdogs():
    for wdt in _WDTS:
        if time.ticks_diff(time.ticks_ms(), wdt.fed) > wdt.timeout:
            sys.stdout.write("watchdog reset\n")
            _exit(EXIT_WATCHDOG)


class RTC:
    def datetime(self, dt=None):
        return None if dt else time.localtime()


def unique_id():
    return b"\x24\x0a\xc4\x00\x00\x01"


def freq():
    return 240000000


def idle():
    time.sleep_ms(1)
