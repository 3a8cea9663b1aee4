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
- ``carve``: archives and compressed streams at any offset, and what follows
  where a reader stopped;
- ``zips``: a zip's central directory, bounded (which local headers it lists);
- ``rar5``: RAR5's encryption, which libarchive does not report;
- ``documents``: encrypted Office, OpenDocument and ARJ files ClamAV passes;
- ``mail``: every MIME part of a message decoded (and yEnc);
- ``pdf``: a PDF's embedded files and decoded streams (qpdf, through pikepdf);
- ``unsupported``: the containers nothing here opens (squashfs, WIM, file
  system images): ``unsupported-format``.

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
from collections.abc import Callable
from pathlib import Path

from functions.scan_object.readers import (
    archives,
    carve,
    documents,
    mail,
    pdf,
    rar5,
    unsupported,
    zips,
)
from functions.scan_object.readers.budget import Budget, LimitReached, UnpackLimits
from functions.scan_object.readers.extraction import Extraction, Member, Problem, Unpacked

recognise = archives.recognise
# How much of a file is read to tell mail (its headers), a PDF or an image
# format (unsupported.HEAD) from other files.
MAIL_HEAD = 8192

__all__ = ["Problem", "UnpackLimits", "Unpacked", "recognise", "unpack"]


def unpack(path: Path, root: Path, limits: UnpackLimits) -> Unpacked:
    """Extract what ``path`` holds (an archive, a compressed stream, either at any
    offset) and what that nests, into ``root``; note encryption found on the way."""
    root.mkdir(parents=True, exist_ok=True)
    x = Extraction(Unpacked(root=root), Budget(limits))
    try:
        try:
            if documents.encrypted(path):
                x.problem(Problem.ENCRYPTED)
            head = archives.read_head(path, MAIL_HEAD)
            if unsupported.kind(head):
                x.problem(Problem.UNSUPPORTED)
            if carve.zlib_stream(head):
                carve.read_zlib(path, "", 1, x, _nested(x))
            for start in carve.lzma_alone(head):
                carve.read_lzma(path, start, "", 1, x, _nested(x))
            if mail.is_mail(head):
                mail.read(path, "", 1, x, _nested(x))
            if pdf.is_pdf(head):
                pdf.read(path, "", 1, x, _nested(x))
            if archives.recognise(path) is not None:
                _open(path, "", 1, x)
            else:
                carve.read_candidates(path, "", 1, x, _nested(x), set(), from_zero=True)
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
    nested = _nested(x)
    before, written = len(x.out.problems), x.out.members
    listed = archives.read_members(path, prefix, depth, x, archives.FORMATS, nested)
    compressed = archives.compressed(path)
    if compressed and (Problem.UNREADABLE in x.out.problems[before:] or x.out.members == written):
        # What `gzip -d` (zstd, xz...) gives, when the archive inside could not be
        # read (a 7z or a zip's central directory must seek, which a compressed
        # stream cannot) or held nothing (a zero block in front of the data reads
        # as an empty tar): the decompressed stream itself, opened again. Its
        # verdict replaces the first attempt's.
        del x.out.problems[before:]
        archives.read_members(path, prefix, depth, x, (), nested)
    elif not listed and x.out.members == written:
        # Recognised by its first bytes but not read at all (text that begins
        # with PK\x03\x04, or BZh91AY&SY): nothing in it decodes, and clamd
        # scanned its raw bytes. Only a reader that read something and then
        # stopped makes the object unreadable.
        x.out.problems[before:] = [p for p in x.out.problems[before:] if p != Problem.UNREADABLE]
    if head.startswith(rar5.SIGNATURE) and rar5.encrypted(path):
        # libarchive 3.6 neither decrypts RAR5 nor says it is encrypted.
        x.problem(Problem.ENCRYPTED)
    # What the directory listed was read above; every other local header is read
    # on its own (entries the directory leaves out, or hides behind a decoy).
    cap = x.budget.limits.max_files
    read_as_zip = bool(listed) and (archives.recognise(path) or "").startswith("ZIP")
    skip = zips.listed_offsets(path, cap) if read_as_zip else set()
    carve.read_candidates(path, prefix, depth, x, nested, skip)


def _nested(x: Extraction) -> Callable[[Member, int], None]:
    """What opens a member: the readers, if it is an archive; the carving, if it
    holds the mark of one somewhere."""

    def nested(member: Member, level: int) -> None:
        if documents.encrypted_manifest(member.label, member.data, member.path):
            x.problem(Problem.ENCRYPTED)  # an encrypted OpenDocument file
        source = member.data if member.data is not None else member.path
        assert source is not None
        head = member.head(MAIL_HEAD)
        if unsupported.kind(head):
            x.problem(Problem.UNSUPPORTED)
        if carve.zlib_stream(head):
            x.budget.depth(level)
            carve.read_zlib(source, member.label, level, x, _nested(x))
        for start in carve.lzma_alone(head):
            x.budget.depth(level)
            carve.read_lzma(source, start, member.label, level, x, _nested(x))
        if mail.is_mail(head):
            x.budget.depth(level)
            mail.read(source, member.label, level, x, _nested(x))
        if pdf.is_pdf(head):
            x.budget.depth(level)
            pdf.read(source, member.label, level, x, _nested(x))
        if member.data is not None and archives.plain_text(member.data):
            return  # no reader here recognises printable text without a mark
        if documents.of_interest(member.head(8)) and documents.encrypted(source):
            x.problem(Problem.ENCRYPTED)
        if archives.recognise(source) is not None:
            with x.as_file(member) as opened:
                _open(opened, member.label, level, x)
            return
        x.budget.depth(level)
        carve.read_candidates(source, member.label, level, x, _nested(x), set(), from_zero=True)

    return nested
