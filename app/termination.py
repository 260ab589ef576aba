"""The failure reason Kubernetes shows: a short line in the container's termination-message file.

The kubelet creates ``/dev/termination-log`` (a regular file bind-mounted into the container,
read after exit: at most 4096 bytes) and ``kubectl describe pod`` shows it as the container's
termination message. Elsewhere the path does not exist (Docker) or is something else, and the job
must neither create a file in a host's ``/dev`` when run as root, nor block on a FIFO, nor
follow a symlink: so it writes only into an existing regular file, opened without following
links and without blocking, and otherwise does nothing. Best effort: the error line on stderr
and the exit code are what count.

``ENGINE_INIT_TERMINATION_LOG`` names another path (Kubernetes' ``terminationMessagePath``).
"""

from __future__ import annotations

import os
import stat

DEFAULT_PATH = "/dev/termination-log"
ENV_VAR = "ENGINE_INIT_TERMINATION_LOG"
#: What the kubelet reads of the file.
MAX_BYTES = 4096


def reason_text(line: str, exit_code: int) -> bytes:
    """``line`` (the error line of stderr) and the exit code, in at most :data:`MAX_BYTES`.
    The exit code comes last and always survives: the line is cut, on a character boundary."""
    tail = f" (exit code {exit_code})\n".encode()
    head = line.replace("\n", " ").encode("utf-8", "replace")[:MAX_BYTES - len(tail)]
    return head.decode("utf-8", "ignore").encode() + tail


def write_reason(line: str, exit_code: int, path: str | None = None) -> bool:
    """Put ``line`` and ``exit_code`` into the termination-message file if it is an existing
    regular file we may write; return whether it was written. Never raises, never blocks."""
    target = path or os.environ.get(ENV_VAR) or DEFAULT_PATH
    flags = os.O_WRONLY | os.O_NONBLOCK | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(target, flags)  # no O_CREAT: the kubelet makes the file, nobody else should
    except (OSError, ValueError):  # absent, a link, no permission, a FIFO without reader, NUL
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # a FIFO with a reader, a device, a folder
            return False
        os.ftruncate(fd, 0)  # after the check: truncating a device or FIFO would mean nothing
        data = reason_text(line, exit_code)
        while data:
            data = data[os.write(fd, data):]
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
