"""The agent's file cache: every file a job needs, stored by its sha256 and checked before use.

A download streams into a temporary file beside the cache, hashing as it goes and stopping as
soon as it is longer than the size it should have; only a file whose size and sha256 match is
renamed into place (atomically, read-only), so whatever sits at a hash's path is that content.
A mismatch raises :class:`FileMismatch` and leaves nothing behind. A hit needs no network; its
content is hashed again before it is handed out (a disk or a person can change a file), and a
file that no longer matches is thrown away and downloaded anew.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from pathlib import Path

import httpx

from dgml.errors import DgmlError, Invalid

CHUNK = 1024 * 1024
SHA256 = re.compile(r"^[0-9a-f]{64}$")


class FileMismatch(DgmlError):
    """Downloaded bytes are not the file the job names: the job must fail, the file is not used."""

    status_code = 422
    code = "file_mismatch"


class DownloadFailed(DgmlError):
    """The file could not be fetched; ``retry`` says whether trying later may help."""

    status_code = 502
    code = "download_failed"

    def __init__(self, detail: str, *, retry: bool) -> None:
        super().__init__(detail)
        self.retry = retry


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class Cache:
    """Content-addressed files under ``root``: ``root/ab/abcdef...``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.tmp = self.root / "tmp"

    def path_for(self, sha256: str) -> Path:
        sha256 = _check_sha(sha256)
        return self.root / sha256[:2] / sha256

    def clean_tmp(self) -> None:
        """Remove downloads a killed agent left half-done."""
        if self.tmp.is_dir():
            for leftover in self.tmp.iterdir():
                with contextlib.suppress(OSError):
                    leftover.unlink()

    def lookup(self, sha256: str, size: int) -> Path | None:
        """The cached file if it is there and still matches, else None (a stale one is removed)."""
        path = self.path_for(sha256)
        try:
            if path.stat().st_size == size and file_sha256(path) == sha256:
                return path
        except FileNotFoundError:
            return None
        with contextlib.suppress(OSError):
            path.unlink()
        return None

    def fetch(self, url: str, sha256: str, size: int, client: httpx.Client) -> Path:
        """The file with this hash: from the cache, or downloaded from ``url`` and verified."""
        if size < 0:
            raise Invalid(f"size must not be negative, not {size}", field="size")
        cached = self.lookup(sha256, size)
        if cached is not None:
            return cached
        self.tmp.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix="dl-", dir=self.tmp)
        temp = Path(name)
        try:
            with os.fdopen(fd, "wb") as out:
                digest = self._download(url, size, client, out)
                out.flush()
                os.fsync(out.fileno())
            if digest != sha256:
                raise FileMismatch(
                    f"{url}: sha256 is {digest}, expected {sha256}; the file was not used"
                )
            temp.chmod(0o444)
            final = self.path_for(sha256)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(temp, final)
            return final
        finally:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()

    def _download(self, url: str, size: int, client: httpx.Client, out) -> str:
        digest = hashlib.sha256()
        received = 0
        try:
            with client.stream("GET", url) as response:
                if response.status_code != 200:
                    raise DownloadFailed(
                        f"GET {url}: {response.status_code} {response.reason_phrase}",
                        retry=response.status_code >= 500 or response.status_code == 429,
                    )
                for chunk in response.iter_bytes(CHUNK):
                    received += len(chunk)
                    if received > size:
                        raise FileMismatch(
                            f"{url}: more than the expected {size} bytes; the file was not used"
                        )
                    digest.update(chunk)
                    out.write(chunk)
        except httpx.HTTPError as exc:
            raise DownloadFailed(
                f"GET {url}: {exc.__class__.__name__}: {exc}", retry=True
            ) from None
        if received != size:
            raise FileMismatch(f"{url}: {received} bytes, expected {size}; the file was not used")
        return digest.hexdigest()


def _check_sha(sha256: str) -> str:
    if not isinstance(sha256, str) or not SHA256.match(sha256):
        raise Invalid("sha256 must be 64 lower-case hex digits", field="sha256")
    return sha256
