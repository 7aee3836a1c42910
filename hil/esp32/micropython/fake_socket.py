# The WiFi network an emulated board sits in (hil/esp32/emulated_board.py). Every TCP connection the node opens goes to
# the one address the host names in CITYEDGE_NET ("127.0.0.1:port": the site's broker as the board sees it),
# whatever host the node was provisioned with, so a board under test never reaches beyond loopback.
# Without CITYEDGE_NET, or for UDP (NTP), names do not resolve, like a network without that server.
import os
import socket as _socket
from socket import *  # noqa: F403 - the rest of the module, unchanged

EAI_NONAME = -2


def getaddrinfo(host, port, af=0, type=0, proto=0, flags=0):
    route = os.getenv("CITYEDGE_NET") or ""
    if not route or type not in (0, _socket.SOCK_STREAM):
        raise OSError(EAI_NONAME)
    address, _, number = route.rpartition(":")
    return _socket.getaddrinfo(address, int(number), af, _socket.SOCK_STREAM, proto, flags)
