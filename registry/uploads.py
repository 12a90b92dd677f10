"""Streaming ``multipart/form-data`` reader for pushes.

The body is never held in memory nor spooled twice: each file part streams straight into a
temporary blob while it is hashed, and the byte cap is enforced as the bytes arrive, so an
oversized upload is refused with 413 without writing more than the cap. Nothing is renamed
into the blob store until the whole form has been read and checked (:meth:`PushForm.commit`);
on any error every temporary file is removed.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from python_multipart.multipart import MultipartParser

from dgml.errors import DgmlError, Invalid, PayloadTooLarge
from registry.blobs import BlobStore, BlobWriter, StoredBlob
from registry.paths import check_path

TEXT_FIELDS = {"manifest", "message", "tag"}
MAX_TEXT_FIELD_BYTES = 1024 * 1024
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


async def read_push_form(
    chunks: AsyncIterator[bytes],
    content_type: str | None,
    store: BlobStore,
    *,
    max_bytes: int,
    max_files: int,
) -> PushForm:
    """Read a push's form from ``chunks``; raises 400, 413 or 422 with nothing left behind."""
    form = PushForm()
    state: dict[str, object] = {}
    headers: dict[str, str] = {}
    header_field = bytearray()
    header_value = bytearray()

    def on_part_begin() -> None:
        headers.clear()
        state["writer"] = None
        state["text_name"] = None
        state["text"] = bytearray()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header_field.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header_value.extend(data[start:end])

    def on_header_end() -> None:
        headers[header_field.decode("latin-1").lower()] = header_value.decode("utf-8", "replace")
        header_field.clear()
        header_value.clear()

    def on_headers_finished() -> None:
        kind, params = _content_disposition(headers.get("content-disposition", ""))
        name = params.get("name")
        if kind != "form-data" or name is None:
            raise MalformedForm("each part needs Content-Disposition: form-data with a name")
        if name == "files":
            if "filename" not in params:
                raise Invalid("a file part needs a filename: it is the file's path", field="files")
            path = check_path(_decode_form_name(params["filename"]))
            if any(existing == path for existing, _ in form.files):
                raise Invalid(f"file {path!r} is given twice", field="files", path=path)
            if len(form.files) >= max_files:
                raise Invalid(f"a version holds at most {max_files} files", field="files")
            writer = store.writer()
            form.files.append((path, writer))
            state["writer"] = writer
        elif name in TEXT_FIELDS:
            if name in form.text:
                raise Invalid(f"form field {name!r} is given twice", field=name)
            state["text_name"] = name
        else:
            raise Invalid(
                f"unknown form field {name!r}; expected files, manifest, message or tag", field=name
            )

    def on_part_data(data: bytes, start: int, end: int) -> None:
        writer = state.get("writer")
        if writer is not None:
            writer.write(memoryview(data)[start:end])
            return
        text = state["text"]
        text.extend(data[start:end])
        if len(text) > MAX_TEXT_FIELD_BYTES:
            raise Invalid(
                f"form field {state['text_name']!r} is too long", field=str(state["text_name"])
            )

    def on_part_end() -> None:
        name = state.get("text_name")
        if name is not None:
            try:
                form.text[name] = bytes(state["text"]).decode("utf-8")
            except UnicodeDecodeError:
                raise Invalid(f"form field {name!r} is not UTF-8 text", field=name) from None

    parser = MultipartParser(
        boundary_from(content_type),
        {
            "on_part_begin": on_part_begin,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_end": lambda: state.__setitem__("ended", True),
        },
    )
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
        parser.finalize()
        if not state.get("ended"):
            raise MalformedForm("the body ended before the closing multipart boundary")
    except BaseException:
        form.abort()
        raise
    return form
