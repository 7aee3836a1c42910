# Fake `network` for the unix port: WiFi is "connected" unless the harness cuts it (CITYEDGE_HW "wifi": false).
# The sockets themselves are real; the harness also breaks the TCP path when it cuts WiFi.
import os

import fake_machine as machine

STA_IF, AP_IF = 0, 1
STAT_GOT_IP = 1010


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
        return STAT_GOT_IP if self.isconnected() else 0

    def ifconfig(self):
        return ("127.0.0.1", "255.0.0.0", "127.0.0.1", "127.0.0.1")
