"""Archives and compressed streams at any offset, and what follows where a reader stopped.

A reader started at a file's first byte sees what is there and stops at its
end; what follows (a second gzip member, a zip after a tar's end or after a
gzip stream, frames after an empty one, a 7z behind an executable stub, a zip
appended to an image) is never read, by it or by ClamAV, yet ordinary tools
extract it. So every file the second pass opens is also searched for the marks
of every format enabled, at every offset, and each candidate is read from
there as an object of its own, within the same budget (each candidate counts
as an entry). A candidate that does not read is not a problem: its raw bytes
were scanned. One that reads is scanned like any member.

Each kind of candidate is read so that work stays linear in the file:

- a zip local header: that one entry (the streaming reader, from there), unless
  the central directory read from the start already listed it;
- a tar header: that one entry;
- gzip, bzip2 and xz: one member or stream, decoded leniently by Python's own
  decoders (a wrong header CRC or trailer does not stop them: what decodes is
  scanned);
- other compressed streams (zstd, lz4, lzip) and archives (7z, RAR, cab, ar,
  cpio, xar, ISO 9660, LHA): libarchive, from there.
"""

from __future__ import annotations

import binascii
import bz2
import ctypes
import lzma
import os
import re
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from functions.scan_object.readers import archives, pdf
from functions.scan_object.readers.budget import LimitReached
from functions.scan_object.readers.extraction import Extraction, Member, Problem, label

_BLOCK = 1 << 20


@dataclass(frozen=True)
class Mark:
    magic: bytes
    before: int  # how far before the mark the object starts
    kind: str  # zip-entry, tar-entry, gzip, bzip2, xz, stream, archive, uu, pdf
    check: Callable[[bytes], bool] = lambda tail: True  # on the bytes from the mark
    # False: only at a file's first byte (``from_zero``), and after a gzip member,
    # where `gzip -d` reads it; never searched for (too weak a mark, or no need).
    anywhere: bool = True


def _compress_flags(tail: bytes) -> bool:
    # Unix compress (.Z): its flags byte says 9 to 16 bits, reserved bits clear.
    return len(tail) > 2 and tail[2] & 0x60 == 0 and 9 <= tail[2] & 0x1F <= 16


_UU_BEGIN = re.compile(rb"begin(-base64)?[ \t]+[0-7]{1,6}[ \t]+[^\r\n]")

MARKS = (
    Mark(b"PK\x03\x04", 0, "zip-entry"),
    Mark(b"ustar", 257, "tar-entry"),
    Mark(b"\x1f\x8b\x08", 0, "gzip"),
    # What `gzip -d` reads beside gzip, at the start or after a member: gzip's
    # old magic, and compress's .Z.
    Mark(b"\x1f\x9e\x08", 0, "gzip", anywhere=False),
    Mark(b"\x1f\x9d", 0, "stream", _compress_flags, anywhere=False),
    Mark(
        b"BZh",
        0,
        "bzip2",
        lambda t: t[3:4] in b"123456789" and t[4:10] in (b"1AY&SY", b"\x17rE8P\x90"),
    ),
    Mark(b"\xfd7zXZ\x00", 0, "xz"),
    Mark(b"\x28\xb5\x2f\xfd", 0, "stream"),  # zstd
    Mark(b"\x04\x22\x4d\x18", 0, "stream"),  # lz4
    Mark(b"\x02\x21\x4c\x18", 0, "stream"),  # lz4's legacy frame (lz4 -l)
    Mark(b"LZIP", 0, "stream", lambda t: t[4:5] == b"\x01"),
    Mark(b"7z\xbc\xaf\x27\x1c", 0, "archive"),
    Mark(b"Rar!\x1a\x07", 0, "archive"),
    # The cab's reserved zeros are checked, not searched for: glibc's memmem
    # takes ten times as long over zeros with them in the needle.
    Mark(b"MSCF", 0, "archive", lambda t: t[4:8] == bytes(4)),
    Mark(b"!<arch>\n", 0, "archive"),
    Mark(b"07070", 0, "archive", lambda t: t[5:6] in b"127"),  # cpio
    Mark(b"xar!", 0, "archive"),
    Mark(b"CD001", 32769, "archive"),  # ISO 9660's first volume descriptor
    Mark(b"-lh", 2, "archive", lambda t: t[4:5] == b"-"),  # LHA
    # uuencode as uudecode reads it (libarchive wants three octal digits and a
    # space; `begin 0644`, `begin 7`, a tab, `begin-base64` are uudecode's too).
    Mark(b"begin", 0, "uu", lambda t: bool(_UU_BEGIN.match(t))),
    # A PDF after other data: qpdf finds it (is_pdf looks at the first KiB only).
    Mark(b"%PDF-", 0, "pdf"),
)
_TAIL = 64


# glibc's memmem, through ctypes: several times faster than bytes.find for these
# short marks, and ctypes lets go of the GIL meanwhile (a gigabyte's search runs
# beside the download and clamd's scan instead of stalling them).
_memmem = ctypes.CDLL(None).memmem
_memmem.restype = ctypes.c_void_p
_memmem.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t]


def candidates(data: bytes, cap: int, from_zero: bool = False) -> list[tuple[int, Mark]]:
    """Where an object of each kind may start in ``data`` (not at 0, where the
    first read was, unless ``from_zero``: nothing read it), in order; at most
    ``cap`` + 1 (more is over the entry budget)."""
    found = _marks_in(data, 0, len(data), 0, cap, from_zero) if data else []
    found.sort(key=lambda item: item[0])
    return found[: cap + 1]


# A file is searched a chunk at a time: a chunk stays in the CPU's cache for the
# twenty searches of it, and memory stays flat whatever the file's size (a mapped
# file's pages count toward the process's RSS as they are touched). Each chunk is
# read with what a mark starting at its end needs: the mark and its tail.
_CHUNK = 1 << 20
_REACH = max(len(mark.magic) for mark in MARKS) + _TAIL


def file_candidates(path: Path, cap: int, from_zero: bool = False) -> list[tuple[int, Mark]]:
    """``candidates`` of a file, read in chunks."""
    found: list[tuple[int, Mark]] = []
    with path.open("rb") as handle:
        at = 0
        while len(found) <= cap:
            lead = 1 if at else 0  # the byte before the chunk: a uu begin line's start
            block = os.pread(handle.fileno(), lead + _CHUNK + _REACH, at - lead)
            if len(block) <= lead:
                break
            end = min(len(block), lead + _CHUNK)
            pdf_found = any(mark.kind == "pdf" for _, mark in found)
            found += _marks_in(
                block, lead, end, at - lead, cap - len(found), from_zero and not at, pdf_found
            )
            if len(block) <= lead + _CHUNK:
                break
            at += _CHUNK
    found.sort(key=lambda item: item[0])
    return found[: cap + 1]


# A PDF mark in the first KiB is is_pdf's (pdf.read reads that file already).
_PDF_FROM = pdf.HEAD - len(b"%PDF-")


def _marks_in(
    data: bytes,
    lo: int,
    hi: int,
    offset: int,
    cap: int,
    from_zero: bool,
    pdf_found: bool = False,
) -> list[tuple[int, Mark]]:
    """The marks that begin in ``data[lo:hi]``, ``data`` being the file's bytes
    from ``offset``; at most ``cap`` + 1 of them (``pdf_found``: no PDF mark)."""
    base = ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p).value or 0
    found: list[tuple[int, Mark]] = []
    if from_zero:
        found += [(0, m) for m in MARKS if not m.anywhere and _starts(data, m)]
    # In ASCII (the chunk and what follows it: text, mostly), a mark with a byte
    # over 0x7F cannot occur: four of the searches are skipped there.
    ascii_only = data.isascii()  # C, and it stops at the first other byte
    for mark in MARKS:
        if not mark.anywhere or (pdf_found and mark.kind == "pdf"):
            continue
        if ascii_only and not mark.magic.isascii():
            continue
        at = lo
        stop = min(len(data), hi + len(mark.magic) - 1)  # a hit here begins before hi
        while len(found) <= cap and at < hi:
            hit = _memmem(base + at, stop - at, mark.magic, len(mark.magic))
            if not hit:
                break
            at = hit - base
            start = offset + at - mark.before
            line_start = (
                mark.kind != "uu" or offset + at == 0 or data[at - 1 : at] in (b"\n", b"\r")
            )
            if (
                (start > 0 or (from_zero and start == 0))
                and line_start
                and mark.check(data[at : at + _TAIL])
                and (mark.kind != "pdf" or start >= _PDF_FROM)
            ):
                found.append((start, mark))
                if mark.kind == "pdf":
                    break  # qpdf reads a file's PDF once: one candidate is enough
            at += 1
    return found


def _starts(data: bytes, mark: Mark) -> bool:
    return data[: len(mark.magic)] == mark.magic and mark.check(data[:_TAIL])


def any_candidate(path: Path) -> bool:
    """Is there a mark anywhere in the file (a plain file's second pass may stop)?"""
    return bool(file_candidates(path, 0, from_zero=True))


def read_candidates(
    source: Path | bytes,
    prefix: str,
    depth: int,
    x: Extraction,
    nested: Callable[[Member, int], None],
    skip_zip_entries: set[int],
    from_zero: bool = False,
) -> None:
    """Read every candidate of ``source`` (a file, or a member's bytes);
    ``from_zero``: one at its first byte too (no reader recognised it there)."""
    cap = x.budget.limits.max_files
    if isinstance(source, bytes):
        found = candidates(source, cap, from_zero)
    else:
        found = file_candidates(source, cap, from_zero)
    if len(found) > cap:
        # The search stopped there: what lies past the last candidate found was
        # not looked at (candidates the loop below skips count too).
        x.problem(Problem.LIMITS)
    for offset, mark in found:
        if mark.kind == "zip-entry" and offset in skip_zip_entries:
            continue
        x.budget.entry()
        where = label(prefix, f"@{offset}")
        if mark.kind == "pdf":
            pdf.read(source, where, depth, x, nested)
            continue
        if mark.kind in ("gzip", "bzip2", "xz", "uu"):
            ended: list[int] = []
            if mark.kind == "uu":
                chunks = _uudecoded(source, offset)
            else:
                chunks = _decoded(source, offset, mark.kind, ended)
            member = x.write(f"{where}/data", chunks, carved=True)
            if member is not None:
                nested(member, depth + 1)
            if ended:
                _after_gzip_member(source, ended[0], prefix, depth, x, nested)
            continue
        window = archives.Window(source, offset)
        if mark.kind == "zip-entry":
            formats, raw, most = archives.ZIP_STREAMING, False, 1
        elif mark.kind == "tar-entry":
            formats, raw, most = ("tar",), False, 1
        elif mark.kind == "stream":
            formats, raw, most = (), True, None
        else:
            formats, raw, most = archives.FORMATS, False, None
        archives.read_members(
            window, where, depth, x, formats, nested, most=most, raw=raw, carved=True
        )


def zlib_stream(head: bytes) -> bool:
    """A zlib header (RFC 1950): deflate, a window of at most 32 KiB, its check."""
    return (
        len(head) >= 2
        and head[0] & 0x0F == 8
        and head[0] >> 4 <= 7
        and (head[0] << 8 | head[1]) % 31 == 0
    )


def read_zlib(
    source: Path | bytes, prefix: str, depth: int, x: Extraction, nested: Callable
) -> None:
    """A raw zlib stream (what 7-Zip and zlib-flate open, libarchive does not):
    inflated as far as it goes; a stream that does not inflate is no problem."""
    chunks = _drain(zlib.decompressobj(zlib.MAX_WBITS), [], _blocks(source, 0))
    member = x.write(label(prefix, "zlib"), chunks, carved=True)
    if member is not None:
        nested(member, depth + 1)


def lzma_alone(head: bytes) -> list[int]:
    """Where a bare .lzma stream (LZMA_Alone: properties, dictionary size, size)
    may start: 0, and 1 behind lzma86's filter byte (7-Zip's); both are tried.
    libarchive's bidder takes only some dictionary sizes; xz and 7-Zip take any."""
    starts = []
    for start in (0, 1):
        if start and head[:1] != b"\x00":
            continue  # lzma86's x86 filter (byte 1) is not undone here
        header = head[start : start + 13]
        if len(header) < 13 or header[0] >= 9 * 5 * 5:
            continue
        (size,) = struct.unpack_from("<Q", header, 5)
        if size == (1 << 64) - 1 or 0 < size < 1 << 40:
            starts.append(start)
    return starts


def read_lzma(
    source: Path | bytes, start: int, prefix: str, depth: int, x: Extraction, nested: Callable
) -> None:
    """A bare .lzma stream, decoded by liblzma as `xz -d` decodes it, as far as it
    goes (a stream that does not decode is no problem: its bytes were scanned)."""
    chunks = _drain(_lzma(lzma.FORMAT_ALONE), [], _blocks(source, start))
    member = x.write(label(prefix, "lzma"), chunks, carved=True)
    del chunks  # and its decoder (up to MAX_DICTIONARY): not kept while the member is read
    if member is not None:
        nested(member, depth + 1)


def _after_gzip_member(
    source: Path | bytes,
    at: int,
    prefix: str,
    depth: int,
    x: Extraction,
    nested: Callable[[Member, int], None],
) -> None:
    """What `gzip -d` reads after a member besides another gzip member (found by
    its own mark): compress's .Z, gzip's old magic; Unix pack, which nothing
    here decodes, is unsupported-format."""
    head = archives.Window(source, at).head(_TAIL)
    for mark in MARKS:
        if mark.anywhere or not _starts(head, mark):
            continue
        x.budget.entry()
        where = label(prefix, f"@{at}")
        if mark.kind == "gzip":
            ended: list[int] = []
            member = x.write(f"{where}/data", _decoded(source, at, "gzip", ended), carved=True)
            if member is not None:
                nested(member, depth + 1)
            if ended:
                _after_gzip_member(source, ended[0], prefix, depth, x, nested)
        else:
            window = archives.Window(source, at)
            archives.read_members(window, where, depth, x, (), nested, raw=True, carved=True)
    if head[:2] == b"\x1f\x1e" and len(head) > 7 and 1 <= head[6] <= 24:
        x.problem(Problem.UNSUPPORTED)


def _decoded(
    source: Path | bytes, offset: int, kind: str, ended: list[int] | None = None
) -> Iterator[bytes]:
    """One gzip member, bzip2 stream or xz stream from ``offset``, as far as it
    decodes; ``ended``: where a gzip member that decoded to its end ends."""
    blocks = _blocks(source, offset)
    if kind == "gzip":
        try:
            head = next(blocks)
        except StopIteration:
            return
        skip = _gzip_header_length(head)
        if skip is None:
            return
        inflate = zlib.decompressobj(-zlib.MAX_WBITS)
        fed = [len(head)]
        yield from _drain(inflate, [head[skip:]], _counted(blocks, fed))
        if inflate.eof and ended is not None:
            ended.append(offset + fed[0] - len(inflate.unused_data) + 8)  # + CRC32, ISIZE
        return
    if kind == "bzip2":
        decoder, pending = bz2.BZ2Decompressor(), []
    else:
        decoder, pending = _lzma(lzma.FORMAT_XZ), []
    yield from _drain(decoder, pending, blocks)


# liblzma allocates the dictionary a stream declares, and each byte decoded
# touches it: a forged header asks for 4 GiB. lzma -9, xz -9 and 7-Zip's
# ultra preset use 64 MiB; beyond this the object is limits-exceeded.
MAX_DICTIONARY = 256 << 20


def _lzma(form: int) -> lzma.LZMADecompressor:
    return lzma.LZMADecompressor(format=form, memlimit=MAX_DICTIONARY + (16 << 20))


def _counted(blocks: Iterator[bytes], fed: list[int]) -> Iterator[bytes]:
    for block in blocks:
        fed[0] += len(block)
        yield block


def _drain(decoder: object, pending: list[bytes], blocks: Iterator[bytes]) -> Iterator[bytes]:
    """Feed the decoder until its stream ends or the input does; an error ends it
    quietly (what decoded so far is scanned; the raw bytes were scanned anyway)."""
    stream = iter(pending)
    while True:
        data = next(stream, None)
        if data is None:
            data = next(blocks, None)
            if data is None:
                return
        try:
            while data or not getattr(decoder, "needs_input", True):
                out = decoder.decompress(data, _BLOCK)  # type: ignore[attr-defined]
                if out:
                    yield out
                data = getattr(decoder, "unconsumed_tail", b"")
                if getattr(decoder, "eof", False):
                    return
                if not out and not data:
                    break
        except lzma.LZMAError as err:
            if "Memory usage limit" in str(err):
                raise LimitReached(f"an LZMA dictionary over {MAX_DICTIONARY >> 20} MiB") from err
            return
        except (OSError, EOFError, ValueError, zlib.error):
            return


def _uudecoded(source: Path | bytes, offset: int) -> Iterator[bytes]:
    """A uuencoded (or ``begin-base64``) block from its begin line to its end, as
    uudecode reads it: a line that does not decode is skipped."""
    lines = _lines(_blocks(source, offset))
    begin = next(lines, b"")
    base64 = begin.startswith(b"begin-base64")
    out = bytearray()
    for line in lines:
        line = line.rstrip(b"\r\n")
        if line in (b"end", b"====") or (base64 and line.startswith(b"====")):
            break
        try:
            out += binascii.a2b_base64(line) if base64 else binascii.a2b_uu(line)
        except binascii.Error:
            continue
        if len(out) >= _BLOCK:
            yield bytes(out)
            out.clear()
    if out:
        yield bytes(out)


def _lines(blocks: Iterator[bytes]) -> Iterator[bytes]:
    """Lines of a block stream (one over 64 KiB is cut: no encoded line is that long)."""
    pending = b""
    for block in blocks:
        pending += block
        *complete, pending = pending.split(b"\n")
        for line in complete:
            yield line[: 64 << 10]
        pending = pending[-(64 << 10) :]
    if pending:
        yield pending


def _gzip_header_length(head: bytes) -> int | None:
    """The length of a gzip member's header (RFC 1952; gzip's old magic 1f 9e
    too), its CRC not checked."""
    if len(head) < 10 or head[:3] not in (b"\x1f\x8b\x08", b"\x1f\x9e\x08"):
        return None
    flags = head[3]
    at = 10
    try:
        if flags & 4:  # FEXTRA
            (length,) = struct.unpack_from("<H", head, at)
            at += 2 + length
        for flag in (8, 16):  # FNAME, FCOMMENT: zero-terminated
            if flags & flag:
                at = head.index(b"\0", at) + 1
        if flags & 2:  # FHCRC
            at += 2
    except (ValueError, struct.error):
        return None
    return at if at <= len(head) else None


def _blocks(source: Path | bytes, offset: int) -> Iterator[bytes]:
    if isinstance(source, bytes):
        for start in range(offset, len(source), _BLOCK):
            yield source[start : start + _BLOCK]
        return
    with source.open("rb") as handle:
        handle.seek(offset)
        while block := handle.read(_BLOCK):
            yield block
