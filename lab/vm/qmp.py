"""A synchronous QMP channel with deadlines, over qemu.qmp's async client.

qemu.qmp is asyncio-based; the lab's controllers are synchronous. One event
loop runs in a daemon thread per channel and every call waits on it with a
timeout, so no QMP call can block forever.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any, Coroutine, TypeVar

from qemu.qmp import QMPClient

from lab.errors import AgentTimeout, MachineError

T = TypeVar("T")


class QmpChannel:
    def __init__(self, sock: socket.socket, name: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"qmp-{name}", daemon=True)
        self._thread.start()
        self._client = QMPClient(name)
        self._sock = sock
        self._closed = False

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float, what: str) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise AgentTimeout(f"QMP {what} got no answer within {timeout:.1f} s") from None
        except AgentTimeout:
            raise
        except Exception as exc:  # qemu.qmp raises its own tree; name the command
            raise MachineError(f"QMP {what} failed: {exc}") from exc

    def connect(self, timeout: float = 10.0) -> None:
        self._call(self._client.connect(self._sock), timeout, "greeting")

    def execute(self, command: str, args: dict[str, object] | None = None, timeout: float = 10.0) -> object:
        return self._call(self._client.execute(command, args), timeout, command)

    def send_fd(self, fd: int, name: str, timeout: float = 10.0) -> None:
        """Hand QEMU a file descriptor over the QMP socket (SCM_RIGHTS) under `name` (QMP getfd)."""
        async def send() -> None:
            self._client.send_fd_scm(fd)
            await self._client.execute("getfd", {"fdname": name})
        self._call(send(), timeout, "getfd")

    def close(self) -> None:
        """Disconnect and stop the loop thread; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            self._call(self._client.disconnect(), 5.0, "disconnect")
        except Exception:
            pass  # the peer may be gone already: that is what close is for
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5.0)
        if not self._thread.is_alive():
            self._loop.close()
