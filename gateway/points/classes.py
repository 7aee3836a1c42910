"""What a point measures, in Home Assistant's words: its device and state classes.

Profiles use Home Assistant's vocabulary because integrators already know it and the
MQTT discovery passes it on unchanged; a word Home Assistant does not know would be
dropped there without a word, so a profile that uses one is refused when it loads.
The lists follow Home Assistant 2026.2 (`SensorDeviceClass`, `BinarySensorDeviceClass`,
`SensorStateClass`); tests/test_home_assistant_vocabulary.py compares them with the
release's own source when its wheel is at hand.
"""

from __future__ import annotations

SENSOR_CLASSES = frozenset(
    [
        "absolute_humidity",
        "apparent_power",
        "aqi",
        "area",
        "atmospheric_pressure",
        "battery",
        "blood_glucose_concentration",
        "carbon_dioxide",
        "carbon_monoxide",
        "conductivity",
        "current",
        "data_rate",
        "data_size",
        "date",
        "distance",
        "duration",
        "energy",
        "energy_distance",
        "energy_storage",
        "enum",
        "frequency",
        "gas",
        "humidity",
        "illuminance",
        "irradiance",
        "moisture",
        "monetary",
        "nitrogen_dioxide",
        "nitrogen_monoxide",
        "nitrous_oxide",
        "ozone",
        "ph",
        "pm1",
        "pm10",
        "pm25",
        "pm4",
        "power",
        "power_factor",
        "precipitation",
        "precipitation_intensity",
        "pressure",
        "reactive_energy",
        "reactive_power",
        "signal_strength",
        "sound_pressure",
        "speed",
        "sulphur_dioxide",
        "temperature",
        "temperature_delta",
        "timestamp",
        "volatile_organic_compounds",
        "volatile_organic_compounds_parts",
        "voltage",
        "volume",
        "volume_flow_rate",
        "volume_storage",
        "water",
        "weight",
        "wind_direction",
        "wind_speed",
    ]
)

BINARY_CLASSES = frozenset(
    [
        "battery",
        "battery_charging",
        "carbon_monoxide",
        "cold",
        "connectivity",
        "door",
        "garage_door",
        "gas",
        "heat",
        "light",
        "lock",
        "moisture",
        "motion",
        "moving",
        "occupancy",
        "opening",
        "plug",
        "power",
        "presence",
        "problem",
        "running",
        "safety",
        "smoke",
        "sound",
        "tamper",
        "update",
        "vibration",
        "window",
    ]
)

DEVICE_CLASSES = SENSOR_CLASSES | BINARY_CLASSES

STATE_CLASSES = ("measurement", "measurement_angle", "total", "total_increasing")


def check_device_class(value: str | None) -> str | None:
    """The value, or ValueError (with a did-you-mean) when Home Assistant does not know it."""
    if value is None or value in DEVICE_CLASSES:
        return value
    from gateway.common.problems import did_you_mean

    hint = did_you_mean(value, sorted(DEVICE_CLASSES))
    raise ValueError(
        f"unknown device_class {value!r}{hint}: use one of Home Assistant's sensor or binary sensor device classes"
    )
