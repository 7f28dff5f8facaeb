"""Presigned stem URLs, S3-style: an HMAC of method, path and expiry in the query string.

The secret is derived from the seed, so a run's URLs repeat; serving the file behind a URL is
the app's. Imports nothing from batchpod.
"""

from __future__ import annotations

import hashlib
import hmac

from ._records import MEDIA_PREFIX


class UrlSigner:
    """Signs storage paths into download URLs, and checks the URLs it signed."""

    def __init__(self, seed: int) -> None:
        self._secret = hashlib.sha256(f"batchpod-sandbox:{seed}".encode()).digest()

    def _signature(self, path: str, expires: int) -> str:
        return hmac.new(self._secret, f"GET\n{path}\n{expires}".encode(), "sha256").hexdigest()

    def presign(self, media_base: str, path: str, expires: int) -> str:
        """An S3-style query-string-signed URL for a storage path."""
        url_path = MEDIA_PREFIX + path
        signature = self._signature(url_path, expires)
        return f"{media_base}{url_path}?Expires={expires}&Signature={signature}"

    def verify(
        self, url_path: str, *, expires: str | None, signature: str | None, now: float
    ) -> str | None:
        """None when the signed URL may be served, else the S3 error code to answer with."""
        if not expires or not signature or not expires.isdigit():
            return "AccessDenied"
        if not hmac.compare_digest(signature, self._signature(url_path, int(expires))):
            return "SignatureDoesNotMatch"
        if now > int(expires):
            return "AccessDenied"
        return None
