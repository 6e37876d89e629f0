"""The one way tests get a port that a server will bind later.

Picking a "free" port (bind 0, read it, close) and handing it to a server is a race: between the
close and the server's bind, any other process on the machine (another test's nats-server, an
outgoing connection) can get the same port from the kernel, and the test then talks to the wrong
server. Two ways out, used everywhere in tests/:

- a server we start ourselves binds port 0 and reports the port it got (the mixer logs it:
  tests.support.mixer.MixerProcess.port; EmbeddedNats asks nats-server for a random port and keeps
  it across restarts);
- a server that must be told its port in advance (a config file, a restart on the same port)
  gets one from `reserve_port()`.
"""

from __future__ import annotations

import contextlib
import socket


def reserve_port(host: str = "127.0.0.1") -> int:
    """A port that nothing listens on and that the kernel will not hand to anyone binding port 0
    for about a minute (the TIME_WAIT period), while a server binding it by number with
    SO_REUSEADDR (nats-server, aiohttp, Python's socketserver) can take it at once.

    How (the ephemeral-port-reserve recipe): listen on a kernel-chosen port, connect to it, accept,
    and close the accepted side first. That side's close leaves a TIME_WAIT socket on the port,
    which keeps it out of the kernel's choice for port 0, and not out of an explicit bind."""
    with contextlib.closing(socket.socket()) as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, 0))
        listener.listen(1)
        address = listener.getsockname()
        with contextlib.closing(socket.socket()) as client:
            client.connect(address)
            accepted, _ = listener.accept()
            accepted.close()
        return int(address[1])
