"""Streaming ``multipart/form-data`` reader for pushes.

The body is never held in memory nor spooled twice: each file part streams straight into a
temporary blob while it is hashed, and the byte cap is enforced as the bytes arrive, so an
oversized upload is refused with 413 without writing more than the cap. Nothing is renamed
into the blob store until the whole form has been read and checked (:meth:`PushForm.commit`);
on any error, a client that goes away included, every temporary file is removed.

The event loop only receives and parses; file bytes go, as views into the received chunks
(never copied), in batches to an :class:`~registry.upload_sink.UploadSink` that hashes and
writes them in a thread while the next bytes arrive.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from python_multipart.multipart import MultipartParser

from dgml.errors import DgmlError, Invalid, PayloadTooLarge
from registry.blobs import BlobStore, BlobWriter, StoredBlob
from registry.paths import check_path
from registry.upload_sink import UploadSink

TEXT_FIELDS = {"manifest", "message", "tag", "base"}
MAX_TEXT_FIELD_BYTES = 1024 * 1024
# A batch is handed to the sink at this size, or at this many views (one writev takes at
# most IOV_MAX, 1024, buffers; a client that trickles its bytes makes many small chunks).
BATCH_BYTES = 2 * 1024 * 1024
BATCH_VIEWS = 256
_PARAM_RE = re.compile(r';\s*([^=;\s]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')
# HTML5 form encoding, which clients such as httpx and browsers use for names in
# Content-Disposition, writes '"' and control characters as %XX.
_FORM_ESCAPE_RE = re.compile(r"%(22|[01][0-9A-Fa-f])")


class MalformedForm(DgmlError):
    status_code = 400
    code = "malformed_form"


@dataclass
class PushForm:
    files: list[tuple[str, BlobWriter]] = field(default_factory=list)
    text: dict[str, str] = field(default_factory=dict)

    def abort(self) -> None:
        for _, writer in self.files:
            writer.abort()

    def entries(self) -> list[tuple[str, str, int]]:
        """``(path, sha256, size)`` of every file, before they are committed."""
        return [(path, writer.sha256, writer.size) for path, writer in self.files]

    def read(self, path: str, limit: int) -> bytes:
        """The uploaded bytes of ``path`` (up to ``limit``), before they are committed."""
        writer = next(w for p, w in self.files if p == path)
        return writer.read_back(limit)

    def commit(self) -> list[tuple[str, StoredBlob]]:
        """Move every file into the blob store; returns ``(path, blob)`` pairs in upload order."""
        return [(path, writer.commit()) for path, writer in self.files]


def _content_disposition(value: str) -> tuple[str, dict[str, str]]:
    kind, _, rest = value.partition(";")
    params: dict[str, str] = {}
    for key, raw in _PARAM_RE.findall(";" + rest):
        raw = raw.strip()
        if len(raw) >= 2 and raw[0] == raw[-1] == '"':
            # No unescaping: browsers and curl send a backslash as it is, other clients double
            # it; either way a backslash stays in the name and the path check refuses it.
            raw = raw[1:-1]
        params[key.lower()] = raw
    return kind.strip().lower(), params


def _decode_form_name(raw: str) -> str:
    return _FORM_ESCAPE_RE.sub(lambda m: chr(int(m.group(1), 16)), raw)


def boundary_from(content_type: str | None) -> bytes:
    if not content_type:
        raise MalformedForm("expected a multipart/form-data body")
    kind, params = _content_disposition(content_type)
    boundary = params.get("boundary")
    if kind != "multipart/form-data" or not boundary:
        raise MalformedForm("expected a multipart/form-data body with a boundary")
    return boundary.encode("latin-1")


class _FormReader:
    """The parser's callbacks for one push, and the batches of file bytes they produce.

    Callbacks run inside :meth:`MultipartParser.write` and must not block, so file bytes are
    gathered into batches of :data:`BATCH_BYTES`, which :func:`read_push_form` hands to the sink.
    """

    def __init__(self, store: BlobStore, max_files: int) -> None:
        self.store = store
        self.max_files = max_files
        self.form = PushForm()
        self.ended = False
        # Views into the received chunks (immutable bytes), so file bytes are never copied.
        self.batches: list[tuple[BlobWriter, list[memoryview], int]] = []
        self._headers: dict[str, str] = {}
        self._field = bytearray()
        self._value = bytearray()
        self._writer: BlobWriter | None = None
        self._pending: list[memoryview] = []
        self._pending_size = 0
        self._text_name: str | None = None
        self._text = bytearray()

    def callbacks(self) -> dict[str, object]:
        return {
            "on_part_begin": self.on_part_begin,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
            "on_header_field": lambda data, start, end: self._field.extend(data[start:end]),
            "on_header_value": lambda data, start, end: self._value.extend(data[start:end]),
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_end": self.on_end,
        }

    def on_part_begin(self) -> None:
        self._headers.clear()
        self._writer = None
        self._text_name = None
        self._text.clear()

    def on_header_end(self) -> None:
        name = self._field.decode("latin-1").lower()
        self._headers[name] = self._value.decode("utf-8", "replace")
        self._field.clear()
        self._value.clear()

    def on_headers_finished(self) -> None:
        kind, params = _content_disposition(self._headers.get("content-disposition", ""))
        name = params.get("name")
        if kind != "form-data" or name is None:
            raise MalformedForm("each part needs Content-Disposition: form-data with a name")
        if name == "files":
            self._begin_file(params)
        elif name in TEXT_FIELDS:
            if name in self.form.text:
                raise Invalid(f"form field {name!r} is given twice", field=name)
            self._text_name = name
        else:
            raise Invalid(
                f"unknown form field {name!r}; expected files, manifest, message or tag", field=name
            )

    def _begin_file(self, params: dict[str, str]) -> None:
        if "filename" not in params:
            raise Invalid("a file part needs a filename: it is the file's path", field="files")
        path = check_path(_decode_form_name(params["filename"]))
        if any(existing == path for existing, _ in self.form.files):
            raise Invalid(f"file {path!r} is given twice", field="files", path=path)
        if len(self.form.files) >= self.max_files:
            raise Invalid(f"a version holds at most {self.max_files} files", field="files")
        self._writer = self.store.writer()
        self.form.files.append((path, self._writer))

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._writer is not None:
            self._pending.append(memoryview(data)[start:end])
            self._pending_size += end - start
            if self._pending_size >= BATCH_BYTES or len(self._pending) >= BATCH_VIEWS:
                self._flush()
            return
        self._text += memoryview(data)[start:end]
        if len(self._text) > MAX_TEXT_FIELD_BYTES:
            raise Invalid(f"form field {self._text_name!r} is too long", field=self._text_name)

    def _flush(self) -> None:
        if self._writer is not None and self._pending:
            self.batches.append((self._writer, self._pending, self._pending_size))
            self._pending = []
            self._pending_size = 0

    def on_part_end(self) -> None:
        self._flush()
        name = self._text_name
        if name is not None:
            try:
                self.form.text[name] = self._text.decode("utf-8")
            except UnicodeDecodeError:
                raise Invalid(f"form field {name!r} is not UTF-8 text", field=name) from None

    def on_end(self) -> None:
        self.ended = True


async def read_push_form(
    chunks: AsyncIterator[bytes],
    content_type: str | None,
    store: BlobStore,
    *,
    max_bytes: int,
    max_files: int,
) -> PushForm:
    """Read a push's form from ``chunks``; raises 400, 413 or 422 with nothing left behind."""
    reader = _FormReader(store, max_files)
    parser = MultipartParser(boundary_from(content_type), reader.callbacks())
    sink = UploadSink()
    received = 0
    try:
        async for chunk in chunks:
            received += len(chunk)
            if received > max_bytes:
                raise PayloadTooLarge(
                    f"upload exceeds the limit of {max_bytes} bytes", limit=max_bytes
                )
            try:
                parser.write(chunk)
            except DgmlError:
                raise
            except Exception as exc:  # the parser's own errors name no type we can rely on
                raise MalformedForm(f"malformed multipart body: {exc}") from None
            if reader.batches:
                _hand_over(reader, sink)
                if sink.behind:
                    await sink.wait()
        parser.finalize()
        if not reader.ended:
            raise MalformedForm("the body ended before the closing multipart boundary")
        _hand_over(reader, sink)
        await sink.wait(drained=True)
    except BaseException:
        await sink.discard(reader.form.abort)
        raise
    return reader.form


def _hand_over(reader: _FormReader, sink: UploadSink) -> None:
    for writer, views, size in reader.batches:
        writer.count(size)
        sink.put(writer, views, size)
    reader.batches.clear()
