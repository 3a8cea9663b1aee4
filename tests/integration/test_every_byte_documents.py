"""Every byte of a document: what a mail client, a PDF reader or an Office
suite gets out of a file is scanned, and what needs a password is
``encrypted``, never clean (the differential corpus's documents; the
archives are in test_every_byte.py)."""

from __future__ import annotations

import io
import zipfile
import zlib
from pathlib import Path

import pytest
from differential import EICAR, check_case, run, tool

from scanctl import samples

# -- encrypted content is unscannable, never clean ------------------------------------------


def docx(text: bytes) -> bytes:
    """A minimal Office Open XML document (a zip ClamAV and Word both read)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(
            "[Content_Types].xml",
            '<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/'
            'package/2006/content-types"/>',
        )
        archive.writestr("word/document.xml", text)
    return buffer.getvalue()


def encrypted_docx(tmp: Path) -> bytes:
    from msoffcrypto.format.ooxml import OOXMLFile

    out = io.BytesIO()
    OOXMLFile(io.BytesIO(docx(EICAR))).encrypt("secret", out)
    return out.getvalue()


def encrypted_odt(tmp: Path, padding: bytes = b"") -> bytes:
    """An OpenDocument file as LibreOffice writes it with a password: its
    manifest names the encryption of each entry (whose bytes are ciphertext);
    ``padding``: a comment that makes the manifest larger."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(zipfile.ZipInfo("mimetype"), b"application/vnd.oasis.opendocument.text")
        archive.writestr(
            "META-INF/manifest.xml",
            b'<manifest:manifest xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:'
            b'manifest:1.0"><manifest:file-entry manifest:full-path="content.xml" '
            b'manifest:media-type="text/xml"><manifest:encryption-data manifest:checksum-'
            b'type="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0#sha256-1k" '
            b'manifest:checksum="x"><manifest:algorithm manifest:algorithm-name='
            b'"http://www.w3.org/2001/04/xmlenc#aes256-cbc"/></manifest:encryption-data>'
            b"</manifest:file-entry>" + padding + b"</manifest:manifest>",
        )
        archive.writestr("content.xml", bytes(range(256)) * 4)  # ciphertext stands in
    return buffer.getvalue()


def garbled_arj(tmp: Path) -> bytes:
    (tmp / "eicar.com").write_bytes(EICAR)
    run(tool("arj"), "a", "-gsecret", "out.arj", "eicar.com", cwd=tmp)
    return (tmp / "out.arj").read_bytes()


ENCRYPTED = {
    "secret.docx": encrypted_docx,
    "secret.odt": encrypted_odt,
    # Its manifest over 1 MiB (a comment): a member written as a file.
    "large-manifest.odt": lambda t: encrypted_odt(t, b"<!--" + b"x" * (2 << 20) + b"-->"),
    "garbled.arj": garbled_arj,
}


@pytest.mark.parametrize("name", sorted(ENCRYPTED))
def test_encrypted_content_is_unscannable_not_clean(harness, tmp_path, name):
    data = ENCRYPTED[name](tmp_path)
    scan = harness.scan(f"encrypted/{name}", data).output["scan"]
    assert (scan["verdict"], scan["reason"]) == ("unscannable", "encrypted"), scan


def test_the_same_documents_unencrypted_are_scanned(harness, tmp_path):
    assert (
        harness.scan("open/plain.docx", docx(b"<w:document/>")).output["scan"]["verdict"] == "clean"
    )
    (tmp_path / "eicar.com").write_bytes(EICAR)
    run(tool("arj"), "a", "plain.arj", "eicar.com", cwd=tmp_path)
    scan = harness.scan("open/plain.arj", (tmp_path / "plain.arj").read_bytes()).output["scan"]
    assert scan["verdict"] == "infected", scan


# -- mail, as a mail client decodes it ------------------------------------------------------


def _mail(headers: str, body: bytes) -> bytes:
    return headers.replace("\n", "\r\n").encode() + b"\r\n" + body


def mail_quoted_printable(tmp: Path) -> bytes:
    import quopri

    return _mail(
        "From: a@example.com\nTo: b@example.com\nSubject: qp\nMIME-Version: 1.0\n"
        'Content-Type: multipart/mixed; boundary="XX"\n',
        b"--XX\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n"
        b'Content-Disposition: attachment; filename="eicar.com"\r\n\r\n'
        + quopri.encodestring(EICAR, quotetabs=True)
        + b"\r\n--XX--\r\n",
    )


def mail_rfc2231_boundary(tmp: Path) -> bytes:
    import base64

    return _mail(
        "From: a@example.com\nSubject: 2231\nMIME-Version: 1.0\n"
        'Content-Type: multipart/mixed; boundary*0="split-"; boundary*1="boundary"\n',
        b"--split-boundary\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Transfer-Encoding: base64\r\n"
        b'Content-Disposition: attachment; filename="eicar.com"\r\n\r\n'
        + base64.encodebytes(EICAR)
        + b"\r\n--split-boundary--\r\n",
    )


def yenc(data: bytes) -> bytes:
    out = bytearray()
    for byte in data:
        coded = (byte + 42) % 256
        if coded in (0x00, 0x0A, 0x0D, 0x3D):
            out += bytes([0x3D, (coded + 64) % 256])
        else:
            out.append(coded)
    return bytes(out)


def mail_yenc(tmp: Path) -> bytes:
    return _mail(
        "From: a@example.com\nNewsgroups: alt.binaries.test\nSubject: yEnc\n",
        b"=ybegin line=128 size=68 name=eicar.com\r\n" + yenc(EICAR) + b"\r\n=yend size=68\r\n",
    )


def email_parts(path: Path, tmp: Path) -> bytes:
    """The oracle: what Python's email package (a mail client's parser) decodes."""
    import email as email_package
    import email.policy

    message = email_package.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    return b"".join(
        part.get_payload(decode=True) or b"" for part in message.walk() if not part.is_multipart()
    )


def yenc_decoded(path: Path, tmp: Path) -> bytes:
    """yEnc as news readers decode it (the spec: (b - 42) mod 256, '=' escapes)."""
    body = path.read_bytes().split(b"=ybegin", 1)[1].split(b"\r\n", 1)[1].split(b"\r\n=yend")[0]
    out, escaped = bytearray(), False
    for byte in body.replace(b"\r\n", b""):
        if escaped:
            out.append((byte - 106) % 256)
            escaped = False
        elif byte == 0x3D:
            escaped = True
        else:
            out.append((byte - 42) % 256)
    return bytes(out)


def every_byte_escaped(tmp: Path) -> bytes:
    """The quoted-printable message with every byte of the attachment escaped."""
    escaped = "".join(f"={byte:02X}" for byte in EICAR).encode()
    message = mail_quoted_printable(tmp).replace(b"\r\n", b"\n").replace(EICAR, escaped)
    assert escaped in message
    return message


def mbox_second_message(tmp: Path) -> bytes:
    """An mbox: a plain first message, then one with a quoted-printable attachment:
    ClamAV and a one-message parser read only the first."""
    return (
        b"From a@example.com Mon Jan  1 00:00:00 2024\nFrom: a@example.com\nSubject: 1\n\n"
        b"first\n\nFrom b@example.com Mon Jan  1 00:01:00 2024\n" + every_byte_escaped(tmp)
    )


def unix_from_first(tmp: Path) -> bytes:
    """A message whose first line is ``From :`` (Python's parser, like mbox
    readers, takes a line beginning ``From `` for the envelope line)."""
    return b"From : a@example.com\r\n" + mail_quoted_printable(tmp).split(b"\r\n", 1)[1]


def from_line_inside_an_attachment(tmp: Path) -> bytes:
    """One message whose quoted-printable attachment (text, then a zip) has a line
    beginning ``From ``: an mbox reader cuts the message there, a mail client
    opening the file does not."""
    import quopri

    payload = b"notes\nFrom me to you\n" + samples.zipped("eicar.com", EICAR)
    message = mail_quoted_printable(tmp).replace(b"\r\n", b"\n")
    message = message.replace(
        quopri.encodestring(EICAR, quotetabs=True), quopri.encodestring(payload)
    )
    assert b"\nFrom me" in message
    return b"From a@example.com Mon Jan  1 00:00:00 2024\n" + message


def zips_in_email_parts(path: Path, tmp: Path) -> bytes:
    """Python's email, then unzip on each part (at the offset the zip starts)."""
    out = b""
    for part in email_parts(path, tmp).split(b"notes\nFrom me to you\n")[1:]:
        with zipfile.ZipFile(io.BytesIO(part)) as archive:
            out += b"".join(archive.read(name) for name in archive.namelist())
    return out


def mbox_parts(path: Path, tmp: Path) -> bytes:
    """The oracle for an mbox: Python's mailbox, each message's parts decoded."""
    import email as email_package
    import email.policy
    import mailbox

    box = mailbox.mbox(
        path,
        factory=lambda f: email_package.message_from_binary_file(f, policy=email.policy.default),
    )
    return b"".join(
        part.get_payload(decode=True) or b""
        for message in box
        for part in message.walk()
        if not part.is_multipart()
    )


MAIL = {
    "second-message.mbox": (mbox_second_message, mbox_parts),
    "from-line-in-attachment.mbox": (from_line_inside_an_attachment, zips_in_email_parts),
    "envelope-line-first.eml": (unix_from_first, email_parts),
    "quoted-printable.eml": (mail_quoted_printable, email_parts),
    "rfc2231-boundary.eml": (mail_rfc2231_boundary, email_parts),
    "yenc.eml": (mail_yenc, yenc_decoded),
}


@pytest.mark.parametrize("name", sorted(MAIL))
def test_what_a_mail_client_decodes_is_scanned(harness, engine, tmp_path, name):
    make, oracle = MAIL[name]
    check_case(harness, engine, tmp_path, name, make, oracle)


def test_a_message_too_large_to_hold_is_limits_exceeded(harness, monkeypatch, tmp_path):
    from functions.scan_object.readers import mail

    # GIVEN an mbox whose second message is larger than the reader holds (lowered here)
    monkeypatch.setattr(mail, "MAX_MESSAGE", 4096)
    benign = b"From a@example.com Mon Jan  1 00:00:00 2024\nFrom: a@example.com\n\nhello\n\n"
    large = b"From b@example.com Mon Jan  1 00:00:00 2024\n" + every_byte_escaped(tmp_path)
    data = benign + large + b"padding line\n" * 400

    # THEN it is never clean: the message was not read
    scan = harness.scan("mail/large.mbox", data).output["scan"]
    assert (scan["verdict"], scan["reason"]) == ("unscannable", "limits-exceeded"), scan

    # AND within the limit, the same mbox is read to its end: infected
    monkeypatch.setattr(mail, "MAX_MESSAGE", 64 << 10)
    assert harness.scan("mail/large.mbox", data).output["scan"]["verdict"] == "infected"


# -- PDF: what a PDF reader extracts ---------------------------------------------------------


def png_predicted(data: bytes, columns: int) -> bytes:
    """Rows of ``columns`` bytes, each with PNG's Sub filter (type 1), as a PDF
    writer may store any stream with /Predictor 11."""
    out = bytearray()
    padded = data.ljust(-(-len(data) // columns) * columns, b"\0")
    for start in range(0, len(padded), columns):
        row = padded[start : start + columns]
        out.append(1)
        out += bytes((row[i] - (row[i - 1] if i else 0)) & 0xFF for i in range(len(row)))
    return bytes(out)


def pdf_with_predicted_attachment(tmp: Path) -> bytes:
    import pikepdf

    pdf = pikepdf.new()
    pdf.add_blank_page()
    stream = pikepdf.Stream(pdf, zlib.compress(png_predicted(EICAR, 17)))
    stream["/Type"] = pikepdf.Name.EmbeddedFile
    stream["/Filter"] = pikepdf.Name.FlateDecode
    stream["/DecodeParms"] = pikepdf.Dictionary(Predictor=11, Columns=17)
    spec = pikepdf.Dictionary(
        Type=pikepdf.Name.Filespec, F="eicar.com", EF=pikepdf.Dictionary(F=stream)
    )
    pdf.Root.Names = pikepdf.Dictionary(
        EmbeddedFiles=pikepdf.Dictionary(Names=pikepdf.Array(["eicar.com", spec]))
    )
    out = io.BytesIO()
    pdf.save(out)
    return out.getvalue()


def pdf_attachments(path: Path, tmp: Path) -> bytes:
    """The oracle: qpdf's own extraction of the attachments (`qpdf --show-attachment`)."""
    import pikepdf

    with pikepdf.open(path) as pdf:
        return b"".join(spec.get_file().read_bytes() for spec in pdf.attachments.values())


def encrypted_pdf(tmp: Path) -> bytes:
    import pikepdf

    pdf = pikepdf.open(io.BytesIO(pdf_with_predicted_attachment(tmp)))
    out = io.BytesIO()
    pdf.save(out, encryption=pikepdf.Encryption(user="secret", owner="secret"))
    return out.getvalue()


def pdf_with_attachment(stream_bytes: bytes, filters: list[str]) -> bytes:
    import pikepdf

    pdf = pikepdf.new()
    pdf.add_blank_page()
    stream = pikepdf.Stream(pdf, stream_bytes)
    stream["/Type"] = pikepdf.Name.EmbeddedFile
    stream["/Filter"] = pikepdf.Array([pikepdf.Name(f) for f in filters])
    spec = pikepdf.Dictionary(
        Type=pikepdf.Name.Filespec, F="payload.zip", EF=pikepdf.Dictionary(F=stream)
    )
    pdf.Root.Names = pikepdf.Dictionary(
        EmbeddedFiles=pikepdf.Dictionary(Names=pikepdf.Array(["payload.zip", spec]))
    )
    out = io.BytesIO()
    pdf.save(out, compress_streams=False, stream_decode_level=pikepdf.StreamDecodeLevel.none)
    return out.getvalue()


def pdf_with_a_large_filter_chain(tmp: Path) -> bytes:
    """An attachment behind ASCIIHex then Flate, over 256 KiB as stored (what qpdf
    alone would decode in memory): 200 KiB of noise, then a zip of EICAR."""
    import random

    noise = random.Random(19).randbytes(200 << 10)
    payload = noise + samples.zipped("eicar.com", EICAR)
    return pdf_with_attachment(
        zlib.compress(payload).hex().encode() + b">", ["/ASCIIHexDecode", "/FlateDecode"]
    )


def pdf_attachment_zips(path: Path, tmp: Path) -> bytes:
    """qpdf's extraction of the attachment, then unzip on it."""
    with zipfile.ZipFile(io.BytesIO(pdf_attachments(path, tmp))) as archive:
        return b"".join(archive.read(name) for name in archive.namelist())


def pdf_after(prefix: bytes, tmp: Path) -> bytes:
    """A PDF after other bytes (more than the 1 KiB readers look for its header
    in): qpdf finds it, warns, and extracts the attachment."""
    return prefix + pdf_with_predicted_attachment(tmp)


def pdf_attachment_saying_image(tmp: Path) -> bytes:
    """An attachment whose stream dictionary says /Subtype /Image."""
    import pikepdf

    pdf = pikepdf.open(io.BytesIO(pdf_with_predicted_attachment(tmp)))
    for item in pdf.objects:
        if isinstance(item, pikepdf.Stream) and item.get("/Type") == pikepdf.Name.EmbeddedFile:
            item["/Subtype"] = pikepdf.Name.Image
    out = io.BytesIO()
    pdf.save(out)
    return out.getvalue()


def attachments_after_a_prefix(path: Path, tmp: Path) -> bytes:
    import pikepdf

    with pikepdf.open(path) as pdf:  # qpdf: "can't find PDF header", then recovers
        return b"".join(spec.get_file().read_bytes() for spec in pdf.attachments.values())


PDFS = {
    "predicted.pdf": pdf_with_predicted_attachment,
    "image-subtype.pdf": pdf_attachment_saying_image,
    "after-2000-bytes.pdf": lambda t: pdf_after(b"A" * 2000, t),
    "page-then-pdf.html": lambda t: pdf_after(b"<html><body>" + b"<p>text</p>" * 200, t),
}


@pytest.mark.parametrize("name", sorted(PDFS))
def test_what_a_pdf_reader_extracts_is_scanned(harness, engine, tmp_path, name):
    check_case(harness, engine, tmp_path, name, PDFS[name], attachments_after_a_prefix)


def test_a_forged_predictor_is_refused_and_a_huge_one_is_limits_exceeded(harness):
    import pikepdf

    def predicted(data: bytes, columns: int) -> bytes:
        pdf = pikepdf.new()
        stream = pikepdf.Stream(pdf, zlib.compress(data))
        stream["/Filter"] = pikepdf.Name.FlateDecode
        stream["/DecodeParms"] = pikepdf.Dictionary(Predictor=12, Columns=columns)
        pdf.Root.Data = stream
        out = io.BytesIO()
        pdf.save(out, stream_decode_level=pikepdf.StreamDecodeLevel.none)
        return out.getvalue()

    # A row of 400 MB (a forged /Columns) would be allocated before any byte decodes.
    scan = harness.scan("forged.pdf", predicted(b"\x02" + bytes(4096), 400_000_000)).output
    assert (scan["scan"]["verdict"], scan["scan"]["reason"]) == (
        "unscannable",
        "archive-unreadable",
    )
    # 80 MiB behind a predictor: more than is undone in memory.
    scan = harness.scan("huge.pdf", predicted(bytes(80 << 20), 68)).output
    assert (scan["scan"]["verdict"], scan["scan"]["reason"]) == ("unscannable", "limits-exceeded")


def test_a_large_stream_behind_a_chain_of_filters_is_decoded(harness, engine, tmp_path):
    check_case(
        harness, engine, tmp_path, "chained.pdf", pdf_with_a_large_filter_chain, pdf_attachment_zips
    )
    # ClamAV decodes this chain too: the second pass must not lean on it.
    from functions.scan_object.readers import UnpackLimits, unpack

    unpacked = unpack(
        tmp_path / "chained.pdf", tmp_path / "out", UnpackLimits(1 << 30, 1 << 30, 100, 16)
    )
    assert "payload.zip/eicar.com" in [m for b in unpacked.batches.values() for m in b]


def lzw(data: bytes) -> bytes:
    """PDF's LZW (9 to 12-bit codes, early change), as old PDF writers stored streams."""
    table, width, codes, word = {bytes([i]): i for i in range(256)}, 9, [(256, 9)], b""
    for byte in data:
        if word + bytes([byte]) in table:
            word += bytes([byte])
            continue
        codes.append((table[word], width))
        if len(table) + 2 < 4096:
            table[word + bytes([byte])] = len(table) + 2
            if len(table) + 3 > 1 << width:
                width = min(width + 1, 12)
        else:
            codes.append((256, width))
            table, width = {bytes([i]): i for i in range(256)}, 9
        word = bytes([byte])
    codes += [(table[word], width), (257, width)]
    bits = "".join(format(code, f"0{size}b") for code, size in codes)
    bits += "0" * (-len(bits) % 8)
    return int(bits, 2).to_bytes(len(bits) // 8, "big")


def test_a_large_lzw_stream_is_decoded_by_the_second_pass(harness, engine, tmp_path):
    import random

    payload = random.Random(7).randbytes(300 << 10) + samples.zipped("eicar.com", EICAR)
    check_case(
        harness,
        engine,
        tmp_path,
        "lzw.pdf",
        lambda t: pdf_with_attachment(lzw(payload), ["/LZWDecode"]),
        pdf_attachment_zips,
    )
    from functions.scan_object.readers import UnpackLimits, unpack

    unpacked = unpack(
        tmp_path / "lzw.pdf", tmp_path / "out", UnpackLimits(1 << 30, 1 << 30, 100, 16)
    )
    assert "payload.zip/eicar.com" in [m for b in unpacked.batches.values() for m in b]


def test_a_pdf_that_needs_a_password_is_encrypted(harness, tmp_path):
    scan = harness.scan("secret.pdf", encrypted_pdf(tmp_path)).output["scan"]
    assert (scan["verdict"], scan["reason"]) == ("unscannable", "encrypted"), scan
