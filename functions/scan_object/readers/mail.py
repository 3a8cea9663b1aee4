"""Mail, read as a mail client reads it: every MIME part decoded, with Python's email.

ClamAV parses mail itself, and reads some of it short: an attachment in
quoted-printable, a boundary given in RFC 2231 continuations
(``boundary*0=...``), a yEnc body. Python's email package decodes base64,
quoted-printable and uuencode, follows RFC 2231 parameters and nested
messages; yEnc (``=ybegin`` ... ``=yend``, as news readers decode it) is
decoded here. Each decoded part is a member, scanned and opened like any
other.

A file is taken for mail when its first lines are mail headers naming MIME
content (``Content-Type``, ``Content-Transfer-Encoding``, ``MIME-Version``)
or a yEnc block; a message larger than ``MAX_MESSAGE`` is left to ClamAV (it
would be held in memory whole).
"""

from __future__ import annotations

import email
import email.policy
import re
from collections.abc import Callable, Iterator
from email.message import Message
from pathlib import Path

from functions.scan_object.readers.extraction import Extraction, Member, label

MAX_MESSAGE = 64 << 20
_HEADER = re.compile(rb"^[A-Za-z][A-Za-z0-9-]{0,60}:[ \t]?", re.MULTILINE)
_MIME = re.compile(rb"^(content-type|content-transfer-encoding|mime-version):", re.I | re.M)
_YBEGIN = re.compile(rb"^=ybegin .*?name=(?P<name>[^\r\n]*)\r?$", re.M)


def is_mail(head: bytes) -> bool:
    """Mail headers first, naming MIME content; or a yEnc block."""
    if _YBEGIN.search(head):
        return True
    first = head.split(b"\n", 1)[0]
    return bool(_HEADER.match(first)) and bool(_MIME.search(head.split(b"\r\n\r\n")[0]))


def read(
    source: Path | bytes,
    prefix: str,
    depth: int,
    x: Extraction,
    nested: Callable[[Member, int], None],
) -> None:
    data = source if isinstance(source, bytes) else _bounded(source)
    if data is None:
        return
    message = email.message_from_bytes(data, policy=email.policy.compat32)
    for index, part in enumerate(message.walk()):
        if part.is_multipart():
            continue
        x.budget.entry()
        for name, payload in _decoded(part, index):
            chunks = iter([payload]) if payload else iter(())
            # Carved: a body met again (a plain message is its own body) is not read twice.
            member = x.write(label(prefix, name), chunks, carved=True)
            if member is not None:
                nested(member, depth + 1)


def _decoded(part: Message, index: int) -> Iterator[tuple[str, bytes]]:
    name = part.get_filename() or f"part-{index}"
    try:
        payload = part.get_payload(decode=True)
    except (ValueError, TypeError, LookupError):
        payload = None
    if not isinstance(payload, bytes):
        raw = part.get_payload()
        payload = raw.encode("latin-1", "replace") if isinstance(raw, str) else b""
    yield name, payload
    for match in _YBEGIN.finditer(payload):
        yield (
            match.group("name").decode("latin-1").strip() or f"{name}.yenc",
            _ydecode(payload, match.end()),
        )


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


def _bounded(path: Path) -> bytes | None:
    if path.stat().st_size > MAX_MESSAGE:
        return None
    return path.read_bytes()
