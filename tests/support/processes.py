"""Stopping the server processes tests start (each in a session of its own), by PID, never by name."""

import contextlib
import os
import signal
import subprocess

__all__ = ("stop_process",)


def stop_process(process: "subprocess.Popen[bytes]", *, timeout: float = 20.0, whole_group: bool = False) -> int:
    """Stop a process we started with ``start_new_session=True``: SIGTERM, then SIGKILL of its process group.

    Args:
        process: The process.
        timeout: Seconds to wait after each signal.
        whole_group: Send the SIGTERM to the whole group too (a shell and the program it started).

    Returns:
        The process's exit code.

    """
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            if whole_group:
                os.killpg(process.pid, signal.SIGTERM)
            else:
                process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # the session we created for it, nothing else
            process.wait(timeout=timeout)
    return process.returncode
