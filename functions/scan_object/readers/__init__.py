"""The second pass: what a file holds, read as the most permissive extractors read it.

clamd answers ``OK`` for content it could not unpack (a zip compressed with
PPMd, a 7z with BZip2, a bare ``.zst``, any RAR: Debian builds ClamAV without
unrar), and its parsers read some containers short of what ordinary tools
extract. So after (and beside) clamd's scan of an object, the readers here
extract everything they can, bounded, into a directory of their own, and
clamd scans every member: nothing is left to a guess about what ClamAV read.

One module per job:

- ``budget``: the limits every reader draws from (bytes, entries, depth, time);
- ``extraction``: where members go (numbered files, labels, problems);
- ``archives``: libarchive, for archives and compressed streams;
- ``zips``: when a zip's local headers must be read as well as its directory;
- ``rar5``: RAR5's encryption, which libarchive does not report.

Safety, by construction: only the formats and filters ``archives`` lists are
enabled; nothing from an archive becomes a file name (members are numbered
files in one flat directory; links, directories and devices are never
created); every byte, entry and level counts against the budget, and hitting
a limit makes the object ``limits-exceeded``; an encrypted member is
``encrypted``; an archive a reader recognised but could not read to the end
is ``archive-unreadable``: neither is ever ``clean``.
"""

from __future__ import annotations

import errno
from pathlib import Path

from functions.scan_object.readers import archives, rar5, zips
from functions.scan_object.readers.budget import Budget, LimitReached, UnpackLimits
from functions.scan_object.readers.extraction import Extraction, Member, Problem, Unpacked

recognise = archives.recognise

__all__ = ["Problem", "UnpackLimits", "Unpacked", "recognise", "unpack"]


def unpack(path: Path, root: Path, limits: UnpackLimits) -> Unpacked:
    """Extract ``path`` (an archive or compressed stream) and what it nests, into ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    x = Extraction(Unpacked(root=root), Budget(limits))
    try:
        try:
            _open(path, "", 1, x)
        finally:
            x.close()
    except LimitReached:
        x.problem(Problem.LIMITS)
    except OSError as err:
        if err.errno != errno.ENOSPC:
            raise
        # /tmp is full: more than this container can hold is more than MaxScanSize allows.
        x.problem(Problem.LIMITS)
    return x.out


def _open(path: Path, prefix: str, depth: int, x: Extraction) -> None:
    """Every reader that can read ``path``, one after another."""
    x.budget.depth(depth)
    head = archives.read_head(path)
    if head.startswith(archives.UNREADABLE_MAGIC):
        x.problem(Problem.UNREADABLE)
        return
    x.out.archives += 1

    def nested(member: Member, level: int) -> None:
        if member.data is not None and archives.plain_text(member.data):
            return
        if archives.recognise(member.data if member.data is not None else member.path) is None:
            return
        with x.as_file(member) as opened:
            _open(opened, member.label, level, x)

    before = len(x.out.problems)
    listed = archives.read_members(path, prefix, depth, x, archives.FORMATS, nested)
    cap = x.budget.limits.max_files
    if head[:4] in zips.MAGIC and zips.needs_local_read(
        path, listed, lambda most: archives.local_names(path, most), cap
    ):
        archives.read_members(path, prefix, depth, x, archives.ZIP_STREAMING, nested)
    if Problem.UNREADABLE in x.out.problems[before:] and archives.compressed(path):
        # A format that must seek (7z, a zip's central directory) cannot be read
        # through a compressed stream: decompress the stream first, then open
        # what came out. Its verdict replaces the first attempt's.
        del x.out.problems[before:]
        archives.read_members(path, prefix, depth, x, (), nested)
    if head.startswith(rar5.SIGNATURE) and rar5.encrypted(path):
        # libarchive 3.6 neither decrypts RAR5 nor says it is encrypted.
        x.problem(Problem.ENCRYPTED)
