"""Timing marks written by the worker processes of the users'-path benchmark and read by the bench.

Each worker process takes one slot of a small shared file (``mmap``) and writes into it, per handled
event, its count and the wall-clock times of its first and latest event: a ``struct.pack_into`` per
event, no system call, so marking costs the workers next to nothing however many processes run. The
bench sums the slots. The last step of a chain sends its latency (``time.time() - t0``) to the bench
in one UDP datagram, which the bench waits for without polling.

Environment of the worker processes: ``BENCH_MARKS`` (the shared file) and ``BENCH_UDP`` (the bench's
port on 127.0.0.1).
"""

from __future__ import annotations

import mmap
import os
import socket
import struct
import time
from pathlib import Path
from typing import Final

SLOTS: Final = 64
_SLOT: Final = struct.Struct("<qdd")  # count, first event's time, latest event's time
SIZE: Final = SLOTS * _SLOT.size


def create(path: Path) -> None:
    """Make an empty marks file (every slot free)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\0" * SIZE)
    for stale in path.parent.glob(f"{path.name}.slot-*"):
        stale.unlink()


class Writer:
    """One process's slot (taken on first use, by creating ``<file>.slot-<i>`` exclusively)."""

    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_RDWR)
        self._map = mmap.mmap(self._fd, SIZE)
        self._offset = self._take_slot(path) * _SLOT.size
        self._count = 0
        self._first = 0.0

    @staticmethod
    def _take_slot(path: str) -> int:
        for i in range(SLOTS):
            try:
                os.close(os.open(f"{path}.slot-{i}", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                continue
            return i
        raise RuntimeError("no free marks slot")

    def hit(self) -> None:
        """Count one handled event now."""
        now = time.time()
        self._count += 1
        if self._count == 1:
            self._first = now
        _SLOT.pack_into(self._map, self._offset, self._count, self._first, now)


class Reader:
    """The bench's view of every slot."""

    def __init__(self, path: Path) -> None:
        self._file = path.open("rb")
        self._map = mmap.mmap(self._file.fileno(), SIZE, access=mmap.ACCESS_READ)

    def slots(self) -> list[tuple[int, float, float]]:
        """(count, first, latest) of every slot in use."""
        rows = [_SLOT.unpack_from(self._map, i * _SLOT.size) for i in range(SLOTS)]
        return [r for r in rows if r[0]]

    def total(self) -> int:
        """Events handled so far, across processes."""
        return sum(r[0] for r in self.slots())

    def first(self) -> float:
        """The time of the first event handled by any process (0.0: none yet)."""
        return min((r[1] for r in self.slots()), default=0.0)

    def latest(self) -> float:
        """The time of the latest event handled by any process."""
        return max((r[2] for r in self.slots()), default=0.0)

    def close(self) -> None:
        """Release the file."""
        self._map.close()
        self._file.close()


_writer: Writer | None = None
_udp: tuple[socket.socket, tuple[str, int]] | None = None


def hit() -> None:
    """Count one handled event (in a worker process)."""
    global _writer
    if _writer is None:
        _writer = Writer(os.environ["BENCH_MARKS"])
    _writer.hit()


def chain_done(t0: float) -> None:
    """Report a chain's latency, measured from ``t0`` (the producer's ``time.time()`` at its first emit)."""
    global _udp
    latency = time.time() - t0
    if _udp is None:
        _udp = (socket.socket(socket.AF_INET, socket.SOCK_DGRAM), ("127.0.0.1", int(os.environ["BENCH_UDP"])))
    sock, addr = _udp
    sock.sendto(repr(latency).encode(), addr)
