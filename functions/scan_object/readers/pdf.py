"""PDF, read with qpdf (through pikepdf): embedded files and decoded streams.

ClamAV parses PDF itself and reads some streams short: an embedded file
compressed with FlateDecode and a PNG or TIFF predictor came out clean. Here
every stream of the document is decoded and scanned as a member (an embedded
file under its own name): every lossless filter of PDF's (FlateDecode and
LZWDecode with their predictors, ASCIIHex, ASCII85, RunLength), in any
chain, by our own decoders, block by block against the budget, since a
stream of a few kilobytes may inflate to gigabytes; any other filter through
qpdf (which decodes none that expands). Image codecs
(DCT, JPX, JBIG2, CCITT) and image XObjects decode to pixels, not files,
and are left to ClamAV.

A document that needs a password to open is ``encrypted``; one encrypted with
an empty user password (common: it only forbids printing or copying) is
decrypted by qpdf and read.
"""

from __future__ import annotations

import contextlib
import io
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from functions.scan_object.readers.extraction import Extraction, Member, Problem, label

_IMAGE_CODECS = {"/DCTDecode", "/JPXDecode", "/JBIG2Decode", "/CCITTFaxDecode"}
_BLOCK = 1 << 20
# A predictor's row (an image's width in bytes): no real one is near this, and
# a forged /Columns must not allocate gigabytes.
_ROW_MAX = 1 << 20
# A predicted stream that decodes to at most this is handed to qpdf (which holds
# it whole); a larger one is limits-exceeded (no real one is near it).
_QPDF_MAX = 64 << 20
# Each decoder takes its input this much at a time (RunLength may expand 64-fold).
_PIECE = 64 << 10


# Where PDF readers look for the header; one further in is carve's to find.
HEAD = 1024


def is_pdf(head: bytes) -> bool:
    return b"%PDF-" in head[:HEAD]


def read(
    source: Path | bytes,
    prefix: str,
    depth: int,
    x: Extraction,
    nested: Callable[[Member, int], None],
) -> None:
    import pikepdf

    try:
        document = pikepdf.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    except pikepdf.PasswordError:
        x.problem(Problem.ENCRYPTED)
        return
    except (pikepdf.PdfError, OSError, ValueError):
        return  # not a PDF qpdf reads: ClamAV had its raw bytes
    with document:
        names = _attachment_names(document)
        for number, item in enumerate(document.objects):
            if not isinstance(item, pikepdf.Stream):
                continue
            x.budget.entry()
            attachment = item.objgen in names or item.get("/Type") == pikepdf.Name.EmbeddedFile
            try:
                chunks = _decoded(item, attachment)
            except _Unreadable:
                x.problem(Problem.UNREADABLE)  # never clean: it was not read
                continue
            except _TooLarge:
                x.problem(Problem.LIMITS)
                continue
            if chunks is None:
                continue
            name = names.get(item.objgen, f"stream-{number}")
            member = x.write(label(prefix, name), chunks, carved=True)
            if member is not None:
                nested(member, depth + 1)


def _attachment_names(document: Any) -> dict[tuple[int, int], str]:
    names = {}
    # A damaged name tree: the streams keep their numbers.
    with contextlib.suppress(Exception):
        for name, spec in document.attachments.items():
            names[spec.get_file().obj.objgen] = str(name)
    return names


def _filters(item: Any) -> tuple[list[str], list[Any]]:
    import pikepdf

    filters = item.get("/Filter")
    if filters is None:
        return [], []
    listed = [str(f) for f in filters] if isinstance(filters, pikepdf.Array) else [str(filters)]
    params = item.get("/DecodeParms")
    if isinstance(params, pikepdf.Array):
        parms = list(params)
    elif params is None:
        parms = [None] * len(listed)
    else:
        parms = [params]
    return listed, parms


class _TooLarge(Exception):
    """A predicted stream decoding past ``_QPDF_MAX``."""


class _Unreadable(Exception):
    """A stream no decoder here reads within bounds (a predictor's rows of gigabytes)."""


def _decoded(item: Any, attachment: bool) -> Iterator[bytes] | None:
    filters, parms = _filters(item)
    if _IMAGE_CODECS & set(filters):
        return None  # pixels, not a file (pdfimages' output, not an attachment's)
    if str(item.get("/Subtype")) == "/Image" and not attachment:
        return None  # an image XObject's pixels; an attachment saying so is still read
    raw = item.read_raw_bytes()
    if any(_predictor(parm) >= 2 for parm in parms):
        for parm in parms:
            _row(parm)  # a forged row size is refused before anyone allocates it
        if _decoded_size(raw, filters) > _QPDF_MAX:
            raise _TooLarge  # our predictor loop would take minutes: limits-exceeded
        # qpdf undoes predictors in C++, a hundred times faster than our loop
        # below (which is for what qpdf refuses).
        with contextlib.suppress(Exception):
            return iter([item.read_bytes()])
    if all(f in _STREAMING for f in filters):
        # Our own decoders, chained block by block against the budget: a stream
        # of a few kilobytes may inflate to gigabytes.
        blocks: Iterator[bytes] = (raw[i : i + _PIECE] for i in range(0, len(raw), _PIECE))
        for name, parm in zip(filters, parms, strict=False):
            blocks = _STREAMING[name](blocks, parm)
        return blocks
    try:
        # A filter ours do not decode (none of PDF's lossless ones): qpdf's.
        return iter([item.read_bytes()])
    except Exception:  # noqa: BLE001 - no PDF reader decodes it: the raw bytes were scanned
        return None


def _inflate(blocks: Iterator[bytes], parms: Any) -> Iterator[bytes]:
    """FlateDecode, bounded block by block, then its predictor (PNG or TIFF)."""
    return _predicted(_inflated(blocks), parms)


def _inflated(blocks: Iterator[bytes]) -> Iterator[bytes]:
    decoder = zlib.decompressobj()
    try:
        for block in blocks:
            pending = block
            while pending:
                out = decoder.decompress(pending, _BLOCK)
                pending = decoder.unconsumed_tail
                if out:
                    yield out
                if decoder.eof:
                    return
                if not out and not pending:
                    break
        yield decoder.flush()
    except zlib.error:
        return  # what inflated so far is scanned


def _predictor(parms: Any) -> int:
    try:
        return int(parms.get("/Predictor", 1)) if parms is not None else 1
    except (TypeError, ValueError):
        return 1


def _row(parms: Any) -> tuple[int, int]:
    """A predictor's row and pixel, in bytes; _Unreadable if out of bounds."""
    try:
        colors = int(parms.get("/Colors", 1))
        bits = int(parms.get("/BitsPerComponent", 8))
        columns = int(parms.get("/Columns", 1))
    except (TypeError, ValueError, AttributeError):
        colors, bits, columns = 1, 8, 1
    pixel = max(1, colors * bits // 8)
    row = (colors * bits * columns + 7) // 8
    if not 0 < row <= _ROW_MAX or not 0 < pixel <= 32:
        raise _Unreadable(f"a predictor's row of {row} bytes")
    return row, pixel


def _decoded_size(raw: bytes, filters: list[str]) -> int:
    """How large the stream decodes (before its predictor), counted up to just
    past ``_QPDF_MAX`` by our own decoders (Flate's in C), nothing held."""
    if not all(f in _STREAMING for f in filters):
        return _QPDF_MAX + 1
    blocks: Iterator[bytes] = (raw[i : i + _PIECE] for i in range(0, len(raw), _PIECE))
    for name in filters:
        blocks = _STREAMING[name](blocks, None)
    size = 0
    for block in blocks:
        size += len(block)
        if size > _QPDF_MAX:
            break
    return size


def _predicted(blocks: Iterator[bytes], parms: Any) -> Iterator[bytes]:
    predictor = _predictor(parms)
    if predictor < 2:
        return blocks
    row, pixel = _row(parms)
    if predictor == 2:
        return _tiff(blocks, row, pixel)
    return _png(blocks, row, pixel)


def _hex(blocks: Iterator[bytes], parms: Any) -> Iterator[bytes]:
    """ASCIIHexDecode: pairs of hex digits, whitespace skipped, '>' ends it."""
    odd = b""
    for block in blocks:
        text, end, _ = block.partition(b">")
        digits = odd + bytes(c for c in text if c in _HEX_DIGITS)
        odd = digits[len(digits) // 2 * 2 :]
        yield bytes.fromhex(digits[: len(digits) // 2 * 2].decode())
        if end:
            break
    if odd:
        yield bytes.fromhex((odd + b"0").decode())


def _ascii85(blocks: Iterator[bytes], parms: Any) -> Iterator[bytes]:
    """ASCII85Decode: groups of five, 'z' for four zeros, '~>' ends it."""
    group = bytearray()
    for block in blocks:
        text, end, _ = block.partition(b"~>")
        out = bytearray()
        for c in text:
            if c == 0x7A and not group:  # 'z'
                out += bytes(4)
            elif 0x21 <= c <= 0x75:
                group.append(c)
                if len(group) == 5:
                    out += _base85_group(group, 5)
                    group.clear()
        yield bytes(out)
        if end:
            break
    if len(group) > 1:
        yield _base85_group(group, len(group))


def _base85_group(group: bytearray, size: int) -> bytes:
    padded = bytes(group) + b"u" * (5 - size)
    value = 0
    for c in padded:
        value = value * 85 + (c - 33)
    return (value & 0xFFFFFFFF).to_bytes(4, "big")[: size - 1]


def _run_length(blocks: Iterator[bytes], parms: Any) -> Iterator[bytes]:
    """RunLengthDecode: a length byte, then that many bytes plus one (below 128)
    or one byte repeated 257 minus it (above 128); 128 ends it."""
    pending = b""
    for block in blocks:
        data, at, out = pending + block, 0, bytearray()
        while at < len(data):
            length = data[at]
            if length == 128:
                yield bytes(out)
                return
            need = length + 2 if length < 128 else 2
            if at + need > len(data):
                break
            if length < 128:
                out += data[at + 1 : at + need]
            else:
                out += data[at + 1 : at + 2] * (257 - length)
            at += need
            if len(out) >= _BLOCK:
                yield bytes(out)
                out.clear()
        pending = data[at:]
        yield bytes(out)


def _lzw(blocks: Iterator[bytes], parms: Any) -> Iterator[bytes]:
    """LZWDecode (PDF's: codes of 9 to 12 bits, MSB first, 256 clears, 257 ends;
    the code width grows one code early unless /EarlyChange is 0), then its
    predictor. Each code adds at most one entry, so memory stays at 4096 entries."""
    early = int(parms.get("/EarlyChange", 1)) if parms is not None else 1
    return _predicted(_lzw_codes(blocks, early), parms)


def _lzw_codes(blocks: Iterator[bytes], early: int) -> Iterator[bytes]:
    table = [bytes([i]) for i in range(256)] + [b"", b""]
    width, bits, held, previous = 9, 0, 0, b""
    for block in blocks:
        out = bytearray()
        for byte in block:
            held, bits = (held << 8) | byte, bits + 8
            while bits >= width:
                bits -= width
                code = (held >> bits) & ((1 << width) - 1)
                held &= (1 << bits) - 1
                if code == 256:
                    table, width, previous = table[:258], 9, b""
                    continue
                if code == 257:
                    yield bytes(out)
                    return
                if code < len(table):
                    entry = table[code]
                elif code == len(table) and previous:
                    entry = previous + previous[:1]
                else:
                    yield bytes(out)
                    return  # a damaged stream: what decoded so far is scanned
                out += entry
                if previous and len(table) < 4096:
                    table.append(previous + entry[:1])
                previous = entry
                if len(table) + early >= (1 << width) and width < 12:
                    width += 1
        yield bytes(out)


_HEX_DIGITS = frozenset(b"0123456789abcdefABCDEF")
_STREAMING: dict[str, Callable[[Iterator[bytes], Any], Iterator[bytes]]] = {
    "/FlateDecode": _inflate,
    "/Fl": _inflate,
    "/ASCIIHexDecode": _hex,
    "/AHx": _hex,
    "/ASCII85Decode": _ascii85,
    "/A85": _ascii85,
    "/RunLengthDecode": _run_length,
    "/RL": _run_length,
    "/LZWDecode": _lzw,
    "/LZW": _lzw,
}


def _rows(blocks: Iterator[bytes], size: int) -> Iterator[bytes]:
    buffer = b""
    for block in blocks:
        buffer += block
        while len(buffer) >= size:
            yield buffer[:size]
            buffer = buffer[size:]
    if buffer:
        yield buffer


def _png(blocks: Iterator[bytes], row: int, pixel: int) -> Iterator[bytes]:
    """PNG predictors (10-15): each row starts with its filter type."""
    previous = bytearray(row)
    out = bytearray()
    for line in _rows(blocks, row + 1):
        kind, data = line[0], bytearray(line[1:].ljust(row, b"\0"))
        for i in range(row):
            left = data[i - pixel] if i >= pixel else 0
            up = previous[i]
            if kind == 1:
                data[i] = (data[i] + left) & 0xFF
            elif kind == 2:
                data[i] = (data[i] + up) & 0xFF
            elif kind == 3:
                data[i] = (data[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                corner = previous[i - pixel] if i >= pixel else 0
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                best = left if pa <= pb and pa <= pc else up if pb <= pc else corner
                data[i] = (data[i] + best) & 0xFF
        out += data
        previous = data
        if len(out) >= _BLOCK:
            yield bytes(out)
            out.clear()
    if out:
        yield bytes(out)


def _tiff(blocks: Iterator[bytes], row: int, pixel: int) -> Iterator[bytes]:
    """TIFF predictor 2 (8-bit components): each byte adds the one a pixel before."""
    for line in _rows(blocks, row):
        data = bytearray(line)
        for i in range(pixel, len(data)):
            data[i] = (data[i] + data[i - pixel]) & 0xFF
        yield bytes(data)
