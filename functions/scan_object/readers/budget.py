"""The one budget every reader draws from: bytes, entries, depth and time.

ClamAV's limits, applied to our unpacking as clamd applies them to its own
(MaxScanSize, MaxFileSize, MaxFiles, MaxRecursion, MaxScanTime). Every entry
an archive lists counts, directories and links too: a file of a million empty
entries must end ``limits-exceeded`` in seconds, not after reading them all.
Hitting a limit raises ``LimitReached``; the object is then ``limits-exceeded``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


class LimitReached(Exception):
    """A limit was hit: the extraction ends, the object is limits-exceeded."""


@dataclass(frozen=True)
class UnpackLimits:
    max_bytes: int  # MaxScanSize: everything written, all levels together
    max_file_bytes: int  # MaxFileSize: one member
    max_files: int  # MaxFiles: entries, all levels together
    max_depth: int  # MaxRecursion
    max_seconds: float = 600.0  # MaxScanTime


@dataclass
class Budget:
    limits: UnpackLimits
    bytes: int = 0
    entries: int = 0
    started: float = field(default_factory=time.monotonic)

    def entry(self) -> None:
        """One more entry listed (with data or not)."""
        self.entries += 1
        if self.entries > self.limits.max_files:
            raise LimitReached(f"more than {self.limits.max_files} entries")
        self.tick()

    def data(self, member_bytes: int, more: int) -> None:
        """``more`` bytes of a member that now holds ``member_bytes``."""
        self.bytes += more
        if member_bytes > self.limits.max_file_bytes:
            raise LimitReached(f"a member larger than {self.limits.max_file_bytes} bytes")
        if self.bytes > self.limits.max_bytes:
            raise LimitReached(f"more than {self.limits.max_bytes} bytes unpacked")
        self.tick()  # a slow decoder (a PDF predictor in Python) is bounded too

    def depth(self, depth: int) -> None:
        if depth > self.limits.max_depth:
            raise LimitReached(f"nested deeper than {self.limits.max_depth}")

    def tick(self) -> None:
        if time.monotonic() - self.started > self.limits.max_seconds:
            raise LimitReached(f"unpacking took longer than {self.limits.max_seconds:.0f} s")
