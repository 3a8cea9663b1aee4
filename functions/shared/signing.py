"""Standard Webhooks signatures (https://www.standardwebhooks.com).

``v1,<base64 HMAC-SHA256 of "<msg id>.<timestamp>.<body>">``, keyed with the
bytes a ``whsec_<base64>`` secret encodes; receivers verify with the
``standardwebhooks`` library of their language.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

from functions.shared.errors import ConfigurationError

SECRET_PREFIX = "whsec_"  # noqa: S105 - the format's prefix, not a secret
MIN_KEY_BYTES = 24


def signing_key(secret: str, where: str = "the webhook secret") -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret; one clear error otherwise."""
    if not secret.strip().startswith(SECRET_PREFIX):
        raise ConfigurationError(
            f"{where} must be a Standard Webhooks secret, whsec_ followed by base64 "
            "(make one with: python -c \"import os,base64;print('whsec_'+"
            'base64.b64encode(os.urandom(32)).decode())").'
        )
    encoded = secret.strip().removeprefix(SECRET_PREFIX).strip()
    try:
        # Padding is optional, as the standardwebhooks libraries accept it.
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigurationError(f"{where} is not valid base64 after whsec_.") from None
    if len(key) < MIN_KEY_BYTES:
        raise ConfigurationError(f"{where} is too short: use at least 24 random bytes.")
    return key


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()
