# The node's config.json: defaults, validation, and atomic saves (write a new file, then rename).
import json
import os

DEFAULTS = {
    "id": "node",
    "wifi": {"ssid": "", "password": ""},
    "broker": {"host": "", "port": 1883, "user": None, "password": None, "keepalive": 30},
    "topic": "nodes",
    "interval": 60,
    "health_interval": 60,
    "sensors": [],
    "deep_sleep": False,
    "ntp": "",
    "buffer_slots": 256,
}
# Settings a remote command may change, with their checks.
REMOTE = {
    "interval": (int, 5, 3600),
    "health_interval": (int, 10, 3600),
    "deep_sleep": (bool, None, None),
}


def load(path="config.json"):
    config = json.loads(json.dumps(DEFAULTS))
    try:
        with open(path) as f:
            stored = json.load(f)
    except (OSError, ValueError):
        return config, "no valid config.json; using defaults"
    for key, value in stored.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key].update(value)
        else:
            config[key] = value
    return config, None


def check_remote(changes):
    """The changes to apply, or raise ValueError naming the first bad one."""
    if not isinstance(changes, dict) or not changes:
        raise ValueError("config takes an object of settings")
    for key, value in changes.items():
        if key not in REMOTE:
            raise ValueError("setting %s cannot be changed remotely" % key)
        kind, low, high = REMOTE[key]
        if kind is bool and not isinstance(value, bool):
            raise ValueError("%s takes true or false" % key)
        if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError("%s takes a whole number" % key)
        if low is not None and not low <= value <= high:
            raise ValueError("%s must be within %s..%s" % (key, low, high))
    return changes


def save(config, path="config.json"):
    tmp = path + ".new"
    with open(tmp, "w") as f:
        json.dump(config, f)
    os.rename(tmp, path)  # atomic on LittleFS and on POSIX: the old file or the new, never half
