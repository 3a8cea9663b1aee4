"""Where readers put what they find, for clamd: batches of small members, and files.

Nothing from an archive becomes a file name. A small member (up to
``SMALL_MEMBER``, held in memory only that far) goes into a batch: a cpio
archive ("newc") we write ourselves, with members named by number, which clamd
reads whole and scans member by member in place (a tar costs it a temporary
file per member, twice the time: 0.09 s against 0.18 s for 1,000 members of
1 KiB; 200 files cost it three times a tar of them). A larger member
is written as ``<root>/<six digits>``. Links, directories and devices are
never created. Each member's name is kept only as a label (control characters
replaced) for the signature report; a batch that clamd reports is opened
again, member by member, to say which one (``Unpacked.batches``).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from functions.scan_object.readers.budget import Budget

_LABEL_MAX = 200
# Members up to this size go into a batch (and are held in memory that far).
SMALL_MEMBER = 1 << 20
# A batch is closed at this size, well below any MaxFileSize clamd is given.
BATCH_BYTES = 32 << 20
# Or at this many members (their names are six digits).
BATCH_MEMBERS = 100_000


class Problem:
    """Why unpacked content could not all be scanned (an UnscannableReason value)."""

    LIMITS = "limits-exceeded"
    ENCRYPTED = "encrypted"
    # Damaged, truncated, or a method no reader here reads.
    UNREADABLE = "archive-unreadable"
    # A container no reader here opens (unsupported.py).
    UNSUPPORTED = "unsupported-format"


@dataclass
class Unpacked:
    """What the extraction found, and what it left under ``root`` for clamd.

    ``labels``: file name under ``root`` -> the member's path in the object;
    ``batches``: a batch's file name -> its members' labels, in order. Every
    member written is scanned.
    """

    root: Path
    labels: dict[str, str] = field(default_factory=dict)
    batches: dict[str, list[str]] = field(default_factory=dict)
    archives: int = 0
    members: int = 0
    bytes: int = 0
    problems: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, int]:
        return {
            "archives": self.archives,
            "members": self.members,
            "bytes": self.bytes,
            "rescanned": len(self.labels) + sum(len(b) for b in self.batches.values()),
        }

    @property
    def scannable(self) -> bool:
        return bool(self.labels or self.batches)


@dataclass
class Member:
    """A member as written: its bytes when small (in a batch), else its file."""

    label: str
    data: bytes | None = None
    path: Path | None = None

    def head(self, size: int = 16) -> bytes:
        if self.data is not None:
            return self.data[:size]
        assert self.path is not None
        with self.path.open("rb") as handle:
            return handle.read(size)


@dataclass
class Extraction:
    """One object's extraction: the output, and the budget every reader draws from."""

    out: Unpacked
    budget: Budget
    _batch: BinaryIO | None = None
    # Digests of what was written: bytes a carved candidate reaches a second way
    # (the member of a 7z whose packed stream is a bzip2 stream, say) are not
    # scanned twice, nor opened again.
    _seen: set[bytes] = field(default_factory=set)
    _batch_name: str = ""
    _batch_bytes: int = 0

    def problem(self, reason: str) -> None:
        self.out.problems.append(reason)

    def write(self, label: str, chunks: Iterable[bytes], carved: bool = False) -> Member | None:
        """A member's data, counted against the budget block by block (None if it
        held nothing, or if ``carved`` and the same bytes were written already).
        When reading fails or a limit is hit part-way, what was read is kept and
        scanned (a match in it wins over the problem recorded)."""
        self.out.members += 1
        held: list[bytes] = []
        size = 0
        target: Path | None = None
        sink = None
        digest = hashlib.sha1(usedforsecurity=False)
        fresh = False
        try:
            for chunk in chunks:
                self.budget.data(size + len(chunk), len(chunk))
                size += len(chunk)
                self.out.bytes += len(chunk)
                digest.update(chunk)
                if sink is None and size <= SMALL_MEMBER:
                    held.append(chunk)
                    continue
                if sink is None:
                    target = self.out.root / f"{self.out.members:06d}"
                    sink = target.open("wb")
                    sink.writelines(held)
                    held = []
                sink.write(chunk)
        finally:
            seen = digest.digest()
            fresh = size > 0 and not (carved and seen in self._seen)
            self._seen.add(seen)
            if sink is not None:
                sink.close()
                if fresh:
                    self.out.labels[target.name] = label  # type: ignore[union-attr]
                else:
                    target.unlink()  # type: ignore[union-attr]
            elif fresh:
                held = [b"".join(held)]
                self._add_to_batch(label, held[0])
        if not fresh:
            return None
        if target is not None:
            return Member(label, path=target)
        return Member(label, data=held[0])

    @contextlib.contextmanager
    def as_file(self, member: Member) -> Iterator[Path]:
        """The member as a file, to open it as an archive: a batched one is written
        out for that time only (clamd scans it in its batch)."""
        if member.path is not None:
            yield member.path
            return
        spilled = self.out.root.with_name(f"{self.out.root.name}.{self.out.members:06d}")
        spilled.write_bytes(member.data or b"")
        try:
            yield spilled
        finally:
            spilled.unlink(missing_ok=True)

    def close(self) -> None:
        if self._batch is not None:
            self._batch.write(_cpio_trailer())
            self._batch.close()
            self._batch = None

    def _add_to_batch(self, label: str, data: bytes) -> None:
        if (
            self._batch is None
            or self._batch_bytes + len(data) > BATCH_BYTES
            or len(self.out.batches[self._batch_name]) >= BATCH_MEMBERS
        ):
            self.close()
            self._batch_name = f"batch-{len(self.out.batches) + 1:04d}.cpio"
            self._batch = (self.out.root / self._batch_name).open("wb")  # closed in close()
            self._batch_bytes = 0
            self.out.batches[self._batch_name] = []
        members = self.out.batches[self._batch_name]
        self._batch.write(_cpio_header(len(members), len(data)) + _NAME_PAD)
        self._batch.write(data)
        self._batch.write(bytes(-len(data) % 4))
        self._batch_bytes += len(data) + 124
        members.append(label)


def _cpio_header(index: int, size: int) -> bytes:
    """A cpio "newc" header (what `cpio -H newc` writes) for member ``index``: its
    six-digit name, NUL-ended, padded to four bytes with the 110-byte header."""
    fields = (index + 1, 0o100644, 0, 0, 1, 0, size, 0, 0, 0, 0, _NAME_FIELD, 0)
    return b"070701" + b"".join(b"%08X" % value for value in fields) + b"%06d\0" % index


_NAME_FIELD = 7  # six digits and the NUL; 110 + 7 + 3 bytes of padding = 120
_NAME_PAD = bytes(3)


def _cpio_trailer() -> bytes:
    end = b"TRAILER!!!\0"
    fields = (0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, len(end), 0)
    header = b"070701" + b"".join(b"%08X" % value for value in fields) + end
    return header + bytes(-len(header) % 4)


def batch_members(batch: Path, target: Path) -> dict[str, int]:
    """A batch's members written out one file each under ``target`` (to say which
    one clamd found something in): file name -> its index in the batch."""
    target.mkdir(parents=True, exist_ok=True)
    names = {}
    with batch.open("rb") as handle:  # ours: numbered members, in the layout written above
        while (header := handle.read(120)) and header[110:120] != b"TRAILER!!!":
            size = int(header[54:62], 16)
            index = int(header[110:116])
            name = f"{index:06d}"
            (target / name).write_bytes(handle.read(size))
            handle.seek(-size % 4, 1)
            names[name] = index
    return names


def label(prefix: str, name: str) -> str:
    """The member's path inside the object, for reports only (never a file name)."""
    if not name.isprintable():
        name = "".join(ch if ch.isprintable() else "?" for ch in name)
    name = name.lstrip("/") or "?"
    joined = f"{prefix}/{name}" if prefix else name
    return joined[-_LABEL_MAX:]
