"""Network guard for tests: with this directory on PYTHONPATH, every Python process (and every Snakemake job
it starts) may only connect to loopback or Unix sockets. Any other connection raises, so a test run under it
proves that the code path never touches the network (the hub, PyPI, ...)."""

import socket

_connect, _connect_ex, _getaddrinfo = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo
LOCAL = ("127.", "::1", "localhost", "0.0.0.0")


def _allowed(sock, address) -> bool:
    if sock.family == getattr(socket, "AF_UNIX", None):
        return True
    host = address[0] if isinstance(address, tuple) else address
    return isinstance(host, str) and host.startswith(LOCAL)


def _refuse(address):
    raise ConnectionRefusedError(f"network access denied by tests/netguard: {address!r}")


def connect(self, address):
    return _connect(self, address) if _allowed(self, address) else _refuse(address)


def connect_ex(self, address):
    return _connect_ex(self, address) if _allowed(self, address) else _refuse(address)


def getaddrinfo(host, *args, **kwargs):
    if host is None or (isinstance(host, str) and (host.startswith(LOCAL) or host == socket.gethostname())):
        return _getaddrinfo(host, *args, **kwargs)
    raise socket.gaierror(f"name resolution denied by tests/netguard: {host!r}")


socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = connect, connect_ex, getaddrinfo
