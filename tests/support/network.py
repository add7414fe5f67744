"""A TCP server that accepts every connection and never sends a byte: a database that hangs."""

import contextlib
import socket
import threading
from collections.abc import Iterator

__all__ = ("silent_server",)


@contextlib.contextmanager
def silent_server() -> Iterator[int]:
    """Listen on a loopback port, accept every connection, never answer; yield the port.

    The accepting runs on a thread, so the server works the same for synchronous tests and for code on an
    event loop. Every accepted connection stays open (silent) until the block ends.
    """
    listener = socket.create_server(("127.0.0.1", 0), backlog=128)
    listener.settimeout(0.05)  # so the thread notices the end of the block
    accepted: list[socket.socket] = []
    done = threading.Event()

    def accept() -> None:
        while not done.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            accepted.append(connection)

    thread = threading.Thread(target=accept, name="silent-server", daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        done.set()
        thread.join(timeout=5)
        listener.close()
        for connection in accepted:
            with contextlib.suppress(OSError):
                connection.close()
