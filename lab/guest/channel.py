"""What both guest channels (agent, events) do to let go of their socket and reader thread."""

from __future__ import annotations

import socket
import threading


def shut_down(sock: socket.socket, reader: threading.Thread, join_timeout: float = 5.0) -> None:
    """Wake the reader (shutdown makes its recv return), close the socket, wait for the reader.

    Safe to call from the reader thread itself (it then does not join itself).
    """
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already disconnected: the peer went first
    sock.close()
    if threading.current_thread() is not reader:
        reader.join(timeout=join_timeout)
