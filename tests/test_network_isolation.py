"""The suite reaches only this machine's services: pytest-socket refuses any other host (pytest.ini's --allow-hosts).

127.0.0.2 is loopback too, but not on the allowed list: if the guard were ever lost, this check still sends nothing
off the machine.
"""

import socket

import pytest
from pytest_socket import SocketConnectBlockedError


def test_hosts_off_the_allowed_list_are_refused():
    with pytest.raises(SocketConnectBlockedError):
        socket.create_connection(("127.0.0.2", 9), timeout=1)


def test_the_allowed_loopback_services_are_reachable(settings):
    host, port = "127.0.0.1", int(settings.DATABASES["default"].get("PORT") or 5432)
    socket.create_connection((host, port), timeout=3).close()
