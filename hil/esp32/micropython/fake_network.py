# Fake `network` for the unix port: WiFi is "connected" unless the harness cuts it (CITYEDGE_HW "wifi": false).
# The sockets themselves are real; the harness also breaks the TCP path when it cuts WiFi.
import os

import fake_machine as machine

STA_IF, AP_IF = 0, 1
# As MicroPython's ESP32 port numbers them.
STAT_IDLE, STAT_CONNECTING, STAT_GOT_IP = 1000, 1001, 1010
STAT_NO_AP_FOUND, STAT_WRONG_PASSWORD, STAT_CONNECT_FAIL = 201, 202, 203


class WLAN:
    def __init__(self, interface=STA_IF):
        self.interface = interface
        self._active = False

    def active(self, on=None):
        if on is None:
            return self._active
        self._active = on
        return None

    def connect(self, ssid=None, key=None):
        self.ssid, self.key = ssid, key

    def disconnect(self):
        pass

    def isconnected(self):
        return self._active and machine._hw().get("wifi", True) and self._credentials_match()

    def _credentials_match(self):
        """An emulated board (CITYEDGE_WIFI="ssid\\npassword") joins only with the right network and key."""
        expected = os.getenv("CITYEDGE_WIFI")
        return expected is None or expected == "%s\n%s" % (getattr(self, "ssid", None), getattr(self, "key", None))

    def status(self, param=None):
        if param == "rssi":
            return int(machine._hw().get("rssi", -61))
        if self.isconnected():
            return STAT_GOT_IP
        if not self._active or not hasattr(self, "ssid"):
            return STAT_IDLE
        expected = os.getenv("CITYEDGE_WIFI")
        if not machine._hw().get("wifi", True):
            return STAT_NO_AP_FOUND  # cut: as a board out of range sees it
        if expected is not None:
            ssid, _, key = expected.partition("\n")
            if ssid != self.ssid:
                return STAT_NO_AP_FOUND
            if key != self.key:
                return STAT_WRONG_PASSWORD
        return STAT_CONNECTING

    def ifconfig(self):
        return ("127.0.0.1", "255.0.0.0", "127.0.0.1", "127.0.0.1")
