"""Sample files and test signature sets, made on the spot.

No malware is shipped or downloaded: the EICAR test string is the industry's
harmless test file, and ClamAV's own test file comes from Debian's
``clamav-testfiles`` package.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tempfile
import zipfile
from pathlib import Path

EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
EICAR_MD5 = "44d88612fea8a8f36de82e1278abb02f"
EICAR_SIGNATURE = "Eicar-Test-Signature"
CLAMAV_TESTFILES = Path("/usr/share/clamav-testfiles")
CLAM_EXE = CLAMAV_TESTFILES / "clam.exe"
CLAM_EXE_SIGNATURE = "ClamAV-Test-File"
# 48 bytes of clam.exe's code section: a body signature matches it inside any
# container ClamAV unpacks (zip, tar.gz, cab, ...), unlike a whole-file hash.
_CLAM_EXE_BODY = (0x40, 0x70)


def write_eicar_set(directory: Path) -> Path:
    """Signature set A: only an MD5 hash signature for the EICAR string."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "eicar.hdb").write_text(f"{EICAR_MD5}:{len(EICAR)}:{EICAR_SIGNATURE}\n")
    return directory


def clam_exe_body_signature() -> str:
    start, end = _CLAM_EXE_BODY
    body = CLAM_EXE.read_bytes()[start:end].hex()
    return f"{CLAM_EXE_SIGNATURE}:0:*:{body}"


def write_test_set(directory: Path) -> Path:
    """Signature set B: EICAR plus a body signature for ClamAV's test file."""
    write_eicar_set(directory)
    if CLAM_EXE.exists():
        (directory / "clamav-test.ndb").write_text(clam_exe_body_signature() + "\n")
    return directory


def zipped(name: str, data: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name, data)
    return buffer.getvalue()


def encrypted_zip(name: str, data: bytes, password: str = "infected") -> bytes:  # noqa: S107
    """A ZipCrypto archive, made with Info-ZIP's ``zip`` (Python cannot write one)."""
    if not shutil.which("zip"):
        raise RuntimeError("the 'zip' command is needed for the encrypted sample (apt install zip)")
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / name
        source.write_bytes(data)
        target = Path(tmp) / "out.zip"
        subprocess.run(
            ["zip", "-q", "-j", "-P", password, str(target), str(source)],
            check=True,
        )
        return target.read_bytes()


def demo_samples() -> dict[str, tuple[bytes, str]]:
    """name -> (content, the verdict it was made for)."""
    return {
        "clean.txt": (b"Quarterly report: nothing to see here.\n", "clean"),
        "eicar.com": (EICAR, "infected"),
        "eicar.zip": (zipped("eicar.com", EICAR), "infected"),
        "nested.zip": (zipped("inner.zip", zipped("eicar.com", EICAR)), "infected"),
        "encrypted.zip": (encrypted_zip("secret.txt", b"top secret\n"), "unscannable"),
    }
