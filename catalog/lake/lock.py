"""One writer of a kind at a time: an advisory lock on a file of the lake (`Lake.lock`)."""

from __future__ import annotations

import os
from pathlib import Path

_HELD: set[str] = set()  # lock files this process holds (a flock does not exclude its own process)


class LakeLock:
    """An exclusive advisory lock (flock) on a file, non-blocking unless `wait`; usable as a
    context manager."""

    def __init__(self, path: Path, wait: bool = False):
        self.path = path
        self.wait = wait
        self.fd: int | None = None

    def held_here(self) -> bool:
        return os.path.abspath(self.path) in _HELD

    def acquire(self) -> "LakeLock":
        import fcntl

        if self.fd is not None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if self.wait else fcntl.LOCK_NB))
        except OSError:
            os.close(fd)
            raise RuntimeError(f"another {self.path.stem} run holds {self.path}") from None
        self.fd = fd
        _HELD.add(os.path.abspath(self.path))
        return self

    def release(self) -> None:
        if self.fd is not None:
            import fcntl

            _HELD.discard(os.path.abspath(self.path))
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> "LakeLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
