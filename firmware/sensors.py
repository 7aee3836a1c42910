# Sensor drivers behind one small interface: `await read()` returns {telemetry key: value}.
# A sensor that does not answer raises OSError; the app reports it and keeps going. A driver that
# waits for a conversion awaits it, so the network tasks run meanwhile (a BH1750 takes 180 ms).
import asyncio
import time

import machine


class BH1750:
    """Ambient light over I2C (one-shot high-resolution mode)."""

    keys = ("lux",)

    def __init__(self, i2c, address=0x23):
        self.i2c, self.address = i2c, address

    async def read(self):
        self.i2c.writeto(self.address, b"\x20")  # one measurement, then power down
        await asyncio.sleep_ms(180)
        raw = self.i2c.readfrom(self.address, 2)
        return {"lux": round(((raw[0] << 8) | raw[1]) / 1.2, 1)}


class BME280:
    """Temperature, humidity and pressure over I2C, with the datasheet's compensation."""

    keys = ("temp", "rh", "pressure")

    def __init__(self, i2c, address=0x76):
        self.i2c, self.address = i2c, address
        self._cal = None

    def _u16(self, b, i):
        return b[i] | (b[i + 1] << 8)

    def _s16(self, b, i):
        v = self._u16(b, i)
        return v - 65536 if v > 32767 else v

    def _calibrate(self):
        b = self.i2c.readfrom_mem(self.address, 0x88, 26)
        h = self.i2c.readfrom_mem(self.address, 0xE1, 7)
        s16 = self._s16
        e4, e5, e6 = h[3], h[4], h[5]
        h4 = (e4 << 4) | (e5 & 0x0F)
        h5 = (e6 << 4) | (e5 >> 4)
        return (
            self._u16(b, 0), s16(b, 2), s16(b, 4),  # T1-T3
            self._u16(b, 6), s16(b, 8), s16(b, 10), s16(b, 12), s16(b, 14), s16(b, 16),
            s16(b, 18), s16(b, 20), s16(b, 22),  # P1-P9
            b[25], s16(h, 0), h[2], h4 - 4096 if h4 > 2047 else h4, h5 - 4096 if h5 > 2047 else h5,
            h[6] - 256 if h[6] > 127 else h[6],  # H1-H6
        )

    async def read(self):
        if self._cal is None:
            self._cal = self._calibrate()
        cal = self._cal
        self.i2c.writeto_mem(self.address, 0xF2, b"\x01")  # humidity x1
        self.i2c.writeto_mem(self.address, 0xF4, b"\x25")  # temperature and pressure x1, forced mode
        await asyncio.sleep_ms(10)
        d = self.i2c.readfrom_mem(self.address, 0xF7, 8)
        adc_p = (d[0] << 12) | (d[1] << 4) | (d[2] >> 4)
        adc_t = (d[3] << 12) | (d[4] << 4) | (d[5] >> 4)
        adc_h = (d[6] << 8) | d[7]
        t1, t2, t3, p1, p2, p3, p4, p5, p6, p7, p8, p9, h1, h2, h3, h4, h5, h6 = cal
        v1 = (adc_t / 16384.0 - t1 / 1024.0) * t2
        v2 = (adc_t / 131072.0 - t1 / 8192.0) ** 2 * t3
        t_fine = v1 + v2
        temp = t_fine / 5120.0
        v1 = t_fine / 2.0 - 64000.0
        v2 = v1 * v1 * p6 / 32768.0 + v1 * p5 * 2.0
        v2 = v2 / 4.0 + p4 * 65536.0
        v1 = (p3 * v1 * v1 / 524288.0 + p2 * v1) / 524288.0
        v1 = (1.0 + v1 / 32768.0) * p1
        pressure = 0.0
        if v1:
            p = (1048576.0 - adc_p - v2 / 4096.0) * 6250.0 / v1
            v1 = p9 * p * p / 2147483648.0
            v2 = p * p8 / 32768.0
            pressure = (p + (v1 + v2 + p7) / 16.0) / 100.0
        h = t_fine - 76800.0
        h = (adc_h - (h4 * 64.0 + h5 / 16384.0 * h)) * (
            h2 / 65536.0 * (1.0 + h6 / 67108864.0 * h * (1.0 + h3 / 67108864.0 * h)))
        h = h * (1.0 - h1 * h / 524288.0)
        return {"temp": round(temp, 2), "rh": round(min(100.0, max(0.0, h)), 1), "pressure": round(pressure, 2)}


class PIR:
    """Motion: the current level, and a count of motion events (by interrupt, so none is missed)."""

    keys = ("motion", "motion_count")

    def __init__(self, pin):
        self.pin = machine.Pin(pin, machine.Pin.IN)
        self.count = 0
        self.pin.irq(trigger=machine.Pin.IRQ_RISING, handler=self._irq)

    def _irq(self, _pin):
        self.count += 1  # no allocation in an interrupt

    async def read(self):
        return {"motion": bool(self.pin.value()), "motion_count": self.count}


class JSNSR04T:
    """Ultrasonic water level: the time of flight of an echo, as metres of water below the mount."""

    keys = ("level",)

    def __init__(self, trigger, echo, mount_height=3.0):
        self.trigger = machine.Pin(trigger, machine.Pin.OUT, value=0)
        self.echo = machine.Pin(echo, machine.Pin.IN)
        self.mount_height = mount_height

    async def read(self):
        self.trigger.value(1)
        time.sleep_us(20)
        self.trigger.value(0)
        micros = machine.time_pulse_us(self.echo, 1, 40000)
        if micros < 0:
            raise OSError("no echo")
        distance = micros * 343.0 / 2e6
        return {"level": round(self.mount_height - distance, 3)}


class Battery:
    """Battery voltage through a resistor divider on an ADC pin."""

    keys = ("vbat",)

    def __init__(self, pin, divider=2.0):
        self.adc = machine.ADC(machine.Pin(pin))
        self.divider = divider

    async def read(self):
        return {"vbat": round(self.adc.read_u16() / 65535 * 3.3 * self.divider, 2)}


def build(specs):
    """Drivers for the config's sensor list; a sensor that cannot even be set up is reported, not fatal."""
    drivers = []  # type: list
    problems = []  # type: list
    buses = {}  # type: dict
    for spec in specs:
        kind = spec.get("type")
        try:
            if kind in ("bh1750", "bme280"):
                key = (spec.get("sda", 21), spec.get("scl", 22))
                if key not in buses:
                    buses[key] = machine.I2C(0, sda=machine.Pin(key[0]), scl=machine.Pin(key[1]), freq=100000)
                cls = BH1750 if kind == "bh1750" else BME280
                drivers.append(cls(buses[key], spec.get("address", 0x23 if kind == "bh1750" else 0x76)))
            elif kind == "pir":
                drivers.append(PIR(spec["pin"]))
            elif kind == "jsn-sr04t":
                drivers.append(JSNSR04T(spec["trigger"], spec["echo"], spec.get("mount_height", 3.0)))
            elif kind == "battery":
                drivers.append(Battery(spec["pin"], spec.get("divider", 2.0)))
            else:
                problems.append("unknown sensor type %s" % kind)
        except (OSError, KeyError, ValueError) as exc:
            problems.append("%s: %s" % (kind, exc))
    return drivers, problems
