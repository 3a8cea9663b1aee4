"""Mail, read as a mail client reads it: every MIME part decoded, with Python's email.

ClamAV parses mail itself, and reads some of it short: an attachment in
quoted-printable, a boundary given in RFC 2231 continuations
(``boundary*0=...``), a yEnc body, the later messages of an mbox. Python's
email package decodes base64, quoted-printable and uuencode, follows RFC 2231
parameters and nested messages; yEnc (``=ybegin`` ... ``=yend``, as news
readers decode it) is decoded here. Each decoded part is a member, scanned
and opened like any other.

Where mail clients are more lenient than Python's package, so are we: a
``Content-Transfer-Encoding`` with parameters, spaces or a fold around its
token is still decoded, and so is a ``message/rfc822`` part sent in base64
or quoted-printable (RFC 2046 forbids it; clients decode it anyway).

A file is taken for mail when, after a byte-order mark or blank lines, its
first lines are mail headers naming MIME content (``Content-Type``,
``Content-Transfer-Encoding``, ``MIME-Version``), or an mbox: a ``From `` line
and a header (each ``From `` line starts a message, as Python's mailbox reads
it), or it holds a yEnc block. Messages are read one at a time; one larger
than ``MAX_MESSAGE`` (it would be held in memory whole) is ``limits-exceeded``.
"""

from __future__ import annotations

import binascii
import email
import email.policy
import quopri
import re
from collections.abc import Callable, Iterator
from email.message import Message
from pathlib import Path

from functions.scan_object.readers.extraction import Extraction, Member, Problem, label

MAX_MESSAGE = 64 << 20
_HEADER = re.compile(rb"^[A-Za-z][A-Za-z0-9-]{0,60}[ \t]*:")
_MIME = re.compile(rb"^(content-type|content-transfer-encoding|mime-version)[ \t]*:", re.I | re.M)
_YBEGIN = re.compile(rb"^=ybegin .*?name=(?P<name>[^\r\n]*)\r?$", re.M)
_ENVELOPE = re.compile(rb"From (\S+ .*\d\d:\d\d|[ \t]*:)")
_BLANK_LINE = re.compile(rb"\r?\n\r?\n")
_LEADING = b"\xef\xbb\xbf"  # a UTF-8 byte-order mark, which some writers put first


def is_mail(head: bytes) -> bool:
    """Mail headers first, naming MIME content; an mbox; or a yEnc block."""
    if b"=ybegin " in head and _YBEGIN.search(head):  # the regex costs more than the test
        return True
    head = _start(head)
    lines = head.split(b"\n", 2)
    if _mbox(lines):
        return True
    return bool(_HEADER.match(lines[0])) and bool(_MIME.search(_BLANK_LINE.split(head, 1)[0]))


def read(
    source: Path | bytes,
    prefix: str,
    depth: int,
    x: Extraction,
    nested: Callable[[Member, int], None],
) -> None:
    count = 0
    for count, data in enumerate(_messages(source), start=1):
        if data is None:
            x.problem(Problem.LIMITS)  # a message too large to hold: never clean
            continue
        _read_message(
            data, label(prefix, f"message-{count - 1}") if count > 1 else prefix, depth, x, nested
        )
    size = len(source) if isinstance(source, bytes) else source.stat().st_size
    if count > 1 and size <= MAX_MESSAGE:
        # A mail client opening the file reads it as one message: a "From " line
        # inside an attachment does not cut it there. Both readings are scanned
        # (what the two give alike, once).
        whole = source if isinstance(source, bytes) else source.read_bytes()
        _read_message(_start(whole), prefix, depth, x, nested)


def _read_message(
    data: bytes, where: str, depth: int, x: Extraction, nested: Callable[[Member, int], None]
) -> None:
    message = email.message_from_bytes(data, policy=email.policy.compat32)
    for index, part in enumerate(_parts(message)):
        x.budget.entry()
        for name, payload in _decoded(part, index):
            chunks = iter([payload]) if payload else iter(())
            # Carved: a body met again (a plain message is its own body) is not read twice.
            member = x.write(label(where, name), chunks, carved=True)
            if member is not None:
                nested(member, depth + 1)


def _start(data: bytes) -> bytes:
    """Past a byte-order mark and blank lines, where a mail client starts reading."""
    return data.removeprefix(_LEADING).lstrip(b"\r\n")


def _mbox(lines: list[bytes]) -> bool:
    # The envelope line as mail systems write it (a sender, then a date with a
    # time) or, as Python's parser accepts, "From :"; then a header.
    return len(lines) > 1 and bool(_ENVELOPE.match(lines[0])) and bool(_HEADER.match(lines[1]))


def _messages(source: Path | bytes) -> Iterator[bytes | None]:
    """Each message: the one the file is, or each of an mbox's (a line that begins
    ``From `` starts the next); None for one over ``MAX_MESSAGE``."""
    lines = _lines(source)
    first = next(lines, b"")
    while first.removeprefix(_LEADING).strip(b"\r\n") == b"":
        if (first := next(lines, None)) is None:
            return
    first = first.removeprefix(_LEADING)
    second = next(lines, b"")
    mbox = _mbox([first, second])
    held, size = [first, second], len(first) + len(second)
    for line in lines:
        if mbox and line.startswith(b"From "):
            yield b"".join(held) if size <= MAX_MESSAGE else None
            held, size = [], 0
        size += len(line)
        if size <= MAX_MESSAGE:
            held.append(line)
        else:
            held = []
    yield b"".join(held) if size <= MAX_MESSAGE else None


def _lines(source: Path | bytes) -> Iterator[bytes]:
    if isinstance(source, bytes):
        yield from source.splitlines(keepends=True)
        return
    with source.open("rb") as handle:
        # Bounded: a file of one endless line is read a mebibyte at a time.
        yield from iter(lambda: handle.readline(1 << 20), b"")


def _parts(message: Message) -> Iterator[Message]:
    """Every leaf part, and every encoded message/* part (decoded whole; what the
    parser made of its encoded text is not walked)."""
    if _encoding(message) in _DECODERS and message.get_content_maintype() == "message":
        yield message
        return
    if not message.is_multipart():
        yield message
        return
    for part in message.get_payload():
        if isinstance(part, Message):
            yield from _parts(part)


def _decoded(part: Message, index: int) -> Iterator[tuple[str, bytes]]:
    name = part.get_filename() or f"part-{index}"
    payload = _payload(part)
    yield name, payload
    for match in _YBEGIN.finditer(payload):
        yield (
            match.group("name").decode("latin-1").strip() or f"{name}.yenc",
            _ydecode(payload, match.end()),
        )


def _payload(part: Message) -> bytes:
    encoding = _encoding(part)
    if part.is_multipart():  # an encoded message/* part: the parser's reading of its text
        text = b"".join(p.as_bytes() for p in part.get_payload() if isinstance(p, Message))
        return _DECODERS[encoding](text)
    raw = part.get_payload()
    if encoding in _DECODERS and isinstance(raw, str):
        return _DECODERS[encoding](raw.encode("latin-1", "replace"))
    try:
        payload = part.get_payload(decode=True)
    except (ValueError, TypeError, LookupError):
        payload = None
    if isinstance(payload, bytes):
        return payload
    return raw.encode("latin-1", "replace") if isinstance(raw, str) else b""


def _encoding(part: Message) -> str:
    """The Content-Transfer-Encoding's token, as a lenient client reads it."""
    value = str(part.get("content-transfer-encoding", "") or "")
    return value.split(";", 1)[0].strip().strip("\"'").lower()


def _base64(data: bytes) -> bytes:
    # Lenient, as mail clients are: characters outside the alphabet are skipped
    # (binascii does), missing padding is supplied.
    try:
        return binascii.a2b_base64(data)
    except binascii.Error:
        clean = re.sub(rb"[^A-Za-z0-9+/]", b"", data)
        clean = clean[:-1] if len(clean) % 4 == 1 else clean
        return binascii.a2b_base64(clean + b"=" * (-len(clean) % 4))


def _uudecode(data: bytes) -> bytes:
    out = bytearray()
    for line in data.splitlines():
        if line.startswith((b"begin ", b"end")) or not line.strip():
            continue
        try:
            out += binascii.a2b_uu(line)
        except binascii.Error:
            continue
    return bytes(out)


_DECODERS: dict[str, Callable[[bytes], bytes]] = {
    "base64": _base64,
    "quoted-printable": quopri.decodestring,
    "x-uuencode": _uudecode,
    "uuencode": _uudecode,
    "x-uue": _uudecode,
    "uue": _uudecode,
}


def _ydecode(data: bytes, start: int) -> bytes:
    """yEnc: each byte is (b - 42) mod 256; '=' escapes the next (minus 64 more);
    lines up to ``=yend``; ``=ypart`` lines skipped."""
    out = bytearray()
    for line in data[start:].splitlines():
        if line.startswith(b"=yend"):
            break
        if line.startswith(b"=ypart"):
            continue
        escaped = False
        for byte in line:
            if escaped:
                out.append((byte - 64 - 42) % 256)
                escaped = False
            elif byte == 0x3D:  # '='
                escaped = True
            else:
                out.append((byte - 42) % 256)
    return bytes(out)
