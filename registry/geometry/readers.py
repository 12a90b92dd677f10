"""Model files in, ``MeshData`` out: STL (binary and ASCII), 3MF, OBJ and PLY.

Every reader either returns a mesh in millimetres or raises ``Unreadable`` with one line a person
can act on. Readers keep what the file says, even when it is wrong (NaN coordinates, open edges):
judging the mesh is the checks' job. What they refuse is what cannot be read safely or at all:
a header that does not match the file, archives that would inflate past a cap, counts no real part
has.
"""

from __future__ import annotations

import io
import posixpath
import re
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path, PurePosixPath
from xml.parsers import expat

import numpy as np
from defusedxml import (
    DefusedXmlException,
    DTDForbidden,
    EntitiesForbidden,
    ExternalReferenceForbidden,
)

from registry.geometry.mesh import MeshData, Unreadable


@dataclass(frozen=True)
class ReadLimits:
    """What a reader refuses before spending time or memory on it."""

    max_triangles: int = 50_000_000
    # Binary STL: bytes past the last triangle that some exporters leave (less than one record).
    stl_max_padding: int = 49
    zip_max_entries: int = 10_000
    zip_max_uncompressed: int = 1 << 30  # 1 GiB for all entries together
    # Declared uncompressed size over archive size; mesh XML deflates about 5 to 10 times.
    zip_max_ratio: float = 200.0
    # 3MF: objects placed by build items and components together (a plate of parts is tens).
    max_placements: int = 100_000


LIMITS = ReadLimits()

# 3MF core specification, "unit" attribute of <model>.
UNIT_TO_MM = {
    "micron": 0.001,
    "millimeter": 1.0,
    "centimeter": 10.0,
    "inch": 25.4,
    "foot": 304.8,
    "meter": 1000.0,
}

# Files that turn up under a model's name: saying what they are beats "bad header".
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"%PDF", "a PDF document"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"PK\x03\x04", "a zip archive"),
    (b"ISO-10303-21", "a STEP file"),
)


def read_model(data: bytes | Path, name: str, *, limits: ReadLimits = LIMITS) -> MeshData:
    """The mesh in ``data``, read by the reader the extension of ``name`` chooses."""
    suffix = PurePosixPath(name.replace("\\", "/")).suffix.lower()
    reader = _READERS.get(suffix)
    if reader is None:
        known = ", ".join(sorted(_READERS))
        raise Unreadable(
            f"{name}: cannot read {suffix or 'files without an extension'} (read: {known})"
        )
    if isinstance(data, Path):
        try:
            data = data.read_bytes()
        except OSError as exc:
            raise Unreadable(f"{name}: cannot open the file ({exc.strerror})") from exc
    if not data:
        raise Unreadable(f"{name} is empty (0 bytes)")
    foreign = _foreign_format(data)
    expected = (suffix == ".3mf" and foreign == "a zip archive") or (
        # a binary STL header is 80 free bytes: its size, not its first bytes, says what it is
        suffix == ".stl" and _binary_stl_size_fits(data, limits)
    )
    if foreign and not expected:
        raise Unreadable(f"{name} is {foreign}, not a {suffix[1:].upper()} model")
    return reader(data, limits=limits)


def _foreign_format(data: bytes) -> str | None:
    head = data[:16]
    return next((what for magic, what in _MAGIC if head.startswith(magic)), None)


def _check_triangle_count(count: int, limits: ReadLimits, what: str) -> None:
    if count > limits.max_triangles:
        raise Unreadable(
            f"{what} declares {count:,} triangles, more than the {limits.max_triangles:,} "
            "a model may have"
        )


# --- STL -------------------------------------------------------------------------------------

_STL_RECORD = np.dtype([("normal", "<f4", (3,)), ("corners", "<f4", (3, 3)), ("attribute", "<u2")])
_NUMBER = rb"(\S+)"
_FACET = re.compile(
    rb"facet\s+normal\s+\S+\s+\S+\s+\S+\s+outer\s+loop"
    + rb"\s+vertex\s+" + rb"\s+".join([_NUMBER] * 3)
    + rb"\s+vertex\s+" + rb"\s+".join([_NUMBER] * 3)
    + rb"\s+vertex\s+" + rb"\s+".join([_NUMBER] * 3)
    + rb"\s+endloop\s+endfacet",
    re.IGNORECASE,
)  # fmt: skip
_SOLID = re.compile(rb"^[ \t]*solid\b[ \t]*([^\r\n]*)", re.IGNORECASE | re.MULTILINE)
_ENDSOLID_ONLY = re.compile(rb"\s*(endsolid\b[^\r\n]*)?\s*", re.IGNORECASE)


def read_stl(data: bytes, *, limits: ReadLimits = LIMITS) -> MeshData:
    """Binary or ASCII STL, told apart by content: a binary file's size is fixed by its count."""
    if _binary_stl_size_fits(data, limits):
        return read_stl_binary(data, limits=limits)
    # Binary exporters may start the header with "solid" too; ASCII STL never holds a NUL.
    head = data[:4096]
    if head.lstrip()[:5].lower() == b"solid" and b"\x00" not in head:
        return read_stl_ascii(data, limits=limits)
    return read_stl_binary(data, limits=limits)


def _binary_stl_size_fits(data: bytes, limits: ReadLimits) -> bool:
    if len(data) < 84:
        return False
    expected = 84 + 50 * int.from_bytes(data[80:84], "little")
    return expected <= len(data) <= expected + limits.stl_max_padding


def read_stl_binary(data: bytes, *, limits: ReadLimits = LIMITS) -> MeshData:
    """Binary STL: an 80-byte header, a uint32 count, then 50-byte triangle records."""
    if len(data) < 84:
        raise Unreadable(
            f"binary STL too short: {len(data)} bytes, where the header and count alone take 84"
        )
    count = int.from_bytes(data[80:84], "little")
    expected = 84 + 50 * count
    if len(data) < expected:
        raise Unreadable(
            f"binary STL header counts {count:,} triangles ({expected:,} bytes) "
            f"but the file holds {len(data):,} bytes: truncated, or not a binary STL"
        )
    if len(data) > expected + limits.stl_max_padding:
        raise Unreadable(
            f"binary STL header counts {count:,} triangles ({expected:,} bytes) "
            f"but the file holds {len(data):,} bytes: the count is wrong, or not a binary STL"
        )
    if count == 0:
        raise Unreadable("binary STL holds no triangles")
    _check_triangle_count(count, limits, "the binary STL header")
    records = np.frombuffer(data, dtype=_STL_RECORD, count=count, offset=84)
    vertices = records["corners"].astype(np.float64).reshape(-1, 3)  # one copy, no float32 one
    faces = np.arange(3 * count, dtype=np.int64).reshape(-1, 3)
    return MeshData(
        vertices=vertices,
        faces=faces,
        source_format="stl-binary",
        object_of_face=np.zeros(count, dtype=np.int32),
    )


def read_stl_ascii(data: bytes, *, limits: ReadLimits = LIMITS) -> MeshData:
    """ASCII STL, one object per ``solid``; every facet exactly three vertices, nothing else."""
    starts = list(_SOLID.finditer(data))
    if not starts or data[: starts[0].start()].strip():
        raise Unreadable("ASCII STL does not start with 'solid'")
    names: list[str] = []
    numbers: list[tuple[bytes, ...]] = []
    counts: list[int] = []
    for i, start in enumerate(starts):
        end = starts[i + 1].start() if i + 1 < len(starts) else len(data)
        body = data[start.end() : end]
        facets = _FACET.findall(body)
        if not _ENDSOLID_ONLY.fullmatch(_FACET.sub(b" ", body)):
            raise Unreadable(_ascii_stl_problem(data, start.end(), body))
        names.append(start.group(1).decode("latin-1").strip() or f"solid {i + 1}")
        numbers.extend(facets)
        counts.append(len(facets))
        _check_triangle_count(len(numbers), limits, "the ASCII STL")
    if not numbers:
        raise Unreadable("ASCII STL holds no facets")
    try:
        vertices = np.array(numbers, dtype=np.bytes_).astype(np.float64).reshape(-1, 3)
    except ValueError:
        bad = next(t for row in numbers for t in row if not _is_number(t))
        raise Unreadable(f"ASCII STL vertex coordinate is not a number: {_snippet(bad)}") from None
    count = len(numbers)
    kept = [k for k, n in enumerate(counts) if n]
    object_of_face = np.repeat(np.arange(len(kept), dtype=np.int32), [counts[k] for k in kept])
    return MeshData(
        vertices=vertices,
        faces=np.arange(3 * count, dtype=np.int64).reshape(-1, 3),
        source_format="stl-ascii",
        objects=tuple(names[k] for k in kept),
        object_of_face=object_of_face,
    )


def _ascii_stl_problem(data: bytes, offset: int, body: bytes) -> str:
    """One line saying where an ASCII STL stops making sense (only on the error path)."""
    position = 0
    for match in _FACET.finditer(body):
        if body[position : match.start()].strip():
            break
        position = match.end()
    gap = body[position:]
    stripped = gap.lstrip()
    at = offset + position + (len(gap) - len(stripped))
    line = data.count(b"\n", 0, at) + 1
    if stripped[:5].lower() == b"facet":
        return (
            f"ASCII STL facet at line {line} is malformed: a facet needs a normal, 'outer loop', "
            "exactly three vertices of three numbers, 'endloop' and 'endfacet'"
        )
    if stripped[:8].lower() == b"endsolid":
        # the endsolid line may carry anything: what broke the parse is on a later line
        rest = stripped.split(b"\n", 1)[1] if b"\n" in stripped else b""
        line += 1 + rest[: len(rest) - len(rest.lstrip())].count(b"\n")
        return f"ASCII STL has text after 'endsolid' at line {line}: {_snippet(rest.lstrip())}"
    return f"ASCII STL has unexpected text at line {line}: {_snippet(stripped)}"


def _is_number(token: bytes) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _snippet(raw: bytes, size: int = 40) -> str:
    text = raw[:size].decode("latin-1").split("\n", 1)[0].strip()
    return repr(text)


# --- OBJ -------------------------------------------------------------------------------------

_CONTINUATION = re.compile(r"\\[ \t]*\r?\n")


def read_obj(data: bytes, *, limits: ReadLimits = LIMITS) -> MeshData:
    """Wavefront OBJ: ``v`` and ``f`` lines (``v``, ``v/vt``, ``v//vn``, ``v/vt/vn``; negative
    indices count back from the latest vertex), polygons split into fans, ``o`` and ``g`` lines
    starting named objects."""
    text = _CONTINUATION.sub(" ", data.decode("utf-8", errors="replace"))
    coordinates: list[str] = []
    corners: list[int] = []
    face_object: list[int] = []
    object_index: dict[str, int] = {}
    pending = "object"
    current = -1
    vertex_count = 0
    max_corners = 3 * limits.max_triangles
    for number, line in enumerate(text.splitlines(), 1):
        tokens = line.split()
        if not tokens:
            continue
        key = tokens[0]
        if key == "v":
            if len(tokens) < 4:
                raise Unreadable(f"OBJ line {number}: a vertex needs three coordinates")
            coordinates.extend(tokens[1:4])
            vertex_count += 1
        elif key == "f":
            polygon = [_obj_index(t, vertex_count, number) for t in tokens[1:]]
            if len(polygon) < 3:
                raise Unreadable(f"OBJ line {number}: a face needs at least three vertices")
            if current < 0 or pending not in object_index:
                current = object_index.setdefault(pending, len(object_index))
            first = polygon[0]
            for a, b in pairwise(polygon[1:]):
                corners += (first, a, b)
                face_object.append(current)
            if len(corners) > max_corners:
                _check_triangle_count(len(corners) // 3, limits, "the OBJ")
        elif key in ("o", "g"):
            pending = " ".join(tokens[1:]) or key
            current = object_index.get(pending, -1)
    if not corners:
        raise Unreadable("OBJ holds no faces")
    try:
        vertices = np.array(coordinates, dtype=np.float64).reshape(-1, 3)
    except ValueError:
        bad = next(t for t in coordinates if not _is_number(t.encode()))
        raise Unreadable(f"OBJ vertex coordinate is not a number: {bad[:40]!r}") from None
    faces = np.array(corners, dtype=np.int64).reshape(-1, 3)
    if faces.max() >= vertex_count:
        raise Unreadable(
            f"OBJ face refers to vertex {int(faces.max()) + 1} but the file defines "
            f"{vertex_count} vertices"
        )
    return MeshData(
        vertices=vertices,
        faces=faces,
        source_format="obj",
        objects=tuple(object_index),
        object_of_face=np.array(face_object, dtype=np.int32),
    )


def _obj_index(token: str, vertex_count: int, line: int) -> int:
    """The 0-based vertex index of one ``f`` corner; positive ones are checked at the end, since
    some writers put faces before the vertices they use."""
    head = token.split("/", 1)[0]
    try:
        index = int(head)
    except ValueError:
        raise Unreadable(f"OBJ line {line}: {token[:40]!r} is not a vertex index") from None
    if index > 0:
        return index - 1
    if index < 0 and -index <= vertex_count:
        return vertex_count + index
    raise Unreadable(
        f"OBJ line {line}: vertex index {index} is out of range "
        f"({vertex_count} vertices defined before it)"
    )


# --- PLY -------------------------------------------------------------------------------------

_PLY_ELEMENT = re.compile(rb"^element\s+(\S+)\s+(\d+)", re.MULTILINE)


def read_ply(data: bytes, *, limits: ReadLimits = LIMITS) -> MeshData:
    """PLY, ASCII or binary, through trimesh's loader once the header's counts look sane."""
    import trimesh  # imported here: only PLY needs it, and it is slow to import

    if not data.startswith(b"ply"):
        raise Unreadable("PLY does not start with 'ply'")
    end = data.find(b"end_header", 0, 65536)
    if end < 0:
        raise Unreadable("PLY header has no 'end_header' in its first 64 KiB")
    counts = {m.group(1): int(m.group(2)) for m in _PLY_ELEMENT.finditer(data[:end])}
    _check_triangle_count(counts.get(b"face", 0), limits, "the PLY header")
    if counts.get(b"vertex", 0) > 3 * limits.max_triangles:
        raise Unreadable(f"PLY header declares {counts[b'vertex']:,} vertices, too many to read")
    try:
        loaded = trimesh.load(io.BytesIO(data), file_type="ply", process=False)
    except Exception as exc:  # trimesh raises whatever its parsers hit on a damaged file
        raise Unreadable(f"PLY cannot be read: {_one_line(exc)}") from None
    faces = getattr(loaded, "faces", None)
    if faces is None or len(faces) == 0:
        raise Unreadable("PLY holds no faces")
    faces = np.asarray(faces, dtype=np.int64)
    vertices = np.asarray(loaded.vertices, dtype=np.float64)
    # trimesh stops quietly at the end of a short ASCII body; polygons only add triangles, so
    # fewer faces (or other vertices) than the header declares means the file was cut.
    declared_faces, declared_vertices = counts.get(b"face", 0), counts.get(b"vertex", 0)
    if len(faces) < declared_faces or len(vertices) != declared_vertices:
        raise Unreadable(
            f"PLY header declares {declared_vertices:,} vertices and {declared_faces:,} faces "
            f"but the file holds {len(vertices):,} and {len(faces):,}: truncated?"
        )
    if faces.min() < 0 or faces.max() >= len(vertices):
        raise Unreadable(f"PLY face refers to a vertex outside its {len(vertices):,} vertices")
    return MeshData(
        vertices=vertices,
        faces=faces,
        source_format="ply",
        object_of_face=np.zeros(len(faces), dtype=np.int32),
    )


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:200]


# --- 3MF -------------------------------------------------------------------------------------

_MODEL_RELATIONSHIP = "http://schemas.microsoft.com/3dmanufacturing/2013/01/3dmodel"
_IDENTITY = np.eye(4)
_MAX_COMPONENT_DEPTH = 32
_CHUNK = 1 << 20


@dataclass
class _Object:
    """One ``<object>`` of a model part: a mesh, or components placing other objects."""

    name: str
    vertices: np.ndarray | None = None
    triangles: np.ndarray | None = None
    # (objectid, 4x4 transform, model part path or None for the same part)
    components: list[tuple[str, np.ndarray, str | None]] = field(default_factory=list)


@dataclass
class _ModelPart:
    unit: str | None
    objects: dict[str, _Object]
    items: list[tuple[str, np.ndarray, str | None]]


def read_3mf(data: bytes, *, limits: ReadLimits = LIMITS) -> MeshData:
    """3MF: check the archive before inflating anything, then read the build's items with their
    transforms and components, in the unit the root model declares."""
    _check_zip_directory(data, limits)
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        NotImplementedError,
        ValueError,
        EOFError,
    ) as exc:
        raise Unreadable(f"3MF is not a readable zip archive: {_one_line(exc)}") from None
    with archive:
        entries = _checked_entries(archive, len(data), limits)
        reader = _PartReader(archive, entries, limits)
        root = reader.part(_root_model_path(archive, entries, limits))
        return _build_mesh(root, reader, limits)


def _check_zip_directory(data: bytes, limits: ReadLimits) -> None:
    """Refuse archives whose end record counts too many entries, before zipfile lists them."""
    eocd = data.rfind(b"PK\x05\x06", max(0, len(data) - 65_557))
    if eocd < 0 or eocd + 22 > len(data):
        raise Unreadable("3MF is not a zip archive (no end of central directory)")
    count = int.from_bytes(data[eocd + 10 : eocd + 12], "little")
    locator = eocd - 20
    if count == 0xFFFF and locator >= 0 and data[locator : locator + 4] == b"PK\x06\x07":
        offset = int.from_bytes(data[locator + 8 : locator + 16], "little")
        if data[offset : offset + 4] == b"PK\x06\x06":
            count = int.from_bytes(data[offset + 32 : offset + 40], "little")
    if count > limits.zip_max_entries:
        raise Unreadable(
            f"3MF archive lists {count:,} entries, more than the {limits.zip_max_entries:,} allowed"
        )


def _checked_entries(
    archive: zipfile.ZipFile, archive_size: int, limits: ReadLimits
) -> dict[str, zipfile.ZipInfo]:
    infos = archive.infolist()
    if len(infos) > limits.zip_max_entries:
        raise Unreadable(
            f"3MF archive lists {len(infos):,} entries, more than the "
            f"{limits.zip_max_entries:,} allowed"
        )
    entries: dict[str, zipfile.ZipInfo] = {}
    for info in infos:
        problem = _entry_name_problem(info.orig_filename)
        if problem:
            raise Unreadable(f"3MF archive entry {info.orig_filename[:80]!r} {problem}")
        if info.filename in entries:
            raise Unreadable(f"3MF archive holds two entries named {info.filename[:80]!r}")
        entries[info.filename] = info
    total = sum(info.file_size for info in infos)
    allowed = min(limits.zip_max_uncompressed, int(limits.zip_max_ratio * archive_size))
    if total > allowed:
        raise Unreadable(
            f"3MF archive would inflate to {total:,} bytes from {archive_size:,} "
            f"(at most {allowed:,}: {limits.zip_max_ratio:g} times the archive, "
            f"{limits.zip_max_uncompressed:,} in all); refused as a probable zip bomb"
        )
    return entries


def _entry_name_problem(name: str) -> str | None:
    if "\\" in name:
        return "has a backslash in its name"
    if "\x00" in name:
        return "has a NUL byte in its name"
    if name.startswith("/") or re.match(r"[A-Za-z]:", name):
        return "has an absolute path"
    if ".." in name.split("/"):
        return "has a '..' segment in its path"
    return None


def _root_model_path(
    archive: zipfile.ZipFile, entries: dict[str, zipfile.ZipInfo], limits: ReadLimits
) -> str:
    """The start part named in ``_rels/.rels``, else the usual ``3D/3dmodel.model``."""
    targets: list[str] = []

    def relationship(name: str, attrs: dict[str, str]) -> None:
        if _local(name) == "Relationship" and attrs.get("Type") == _MODEL_RELATIONSHIP:
            targets.append(_part_path(attrs.get("Target", "")))

    rels = entries.get("_rels/.rels")
    if rels is not None:
        _parse_entry(archive, rels, limits, relationship)
    if targets:
        if targets[0] not in entries:
            raise Unreadable(f"3MF names model part {targets[0][:80]!r}, which is not in it")
        return targets[0]
    if "3D/3dmodel.model" in entries:
        return "3D/3dmodel.model"
    models = [n for n in entries if n.lower().endswith(".model")]
    if models:
        return models[0]
    raise Unreadable("3MF holds no model part (no 3D/3dmodel.model)")


def _part_path(target: str) -> str:
    path = posixpath.normpath("/" + target.strip().lstrip("/"))
    return path.lstrip("/")


def _forbid_dtd(*_: object) -> None:
    raise DTDForbidden(None, None, None)


def _forbid_entity(name: str, *_: object) -> None:
    raise EntitiesForbidden(name, None, None, None, None, None)


def _forbid_external(context: str, base: str | None, system_id: str, public_id: str) -> None:
    raise ExternalReferenceForbidden(context, base, system_id, public_id)


def _parse_entry(
    archive: zipfile.ZipFile,
    info: zipfile.ZipInfo,
    limits: ReadLimits,
    start: Callable[[str, dict[str, str]], None],
    end: Callable[[str], None] | None = None,
) -> None:
    """Stream one XML entry through expat with defusedxml's rules (no DTD, hence no entities,
    no external references), never inflating more bytes than the entry declared."""
    # 3MF parts are UTF-8 by specification: whatever encoding a part declares is not looked up.
    parser = expat.ParserCreate(encoding="utf-8", namespace_separator="}")
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartDoctypeDeclHandler = _forbid_dtd
    parser.EntityDeclHandler = _forbid_entity
    parser.UnparsedEntityDeclHandler = _forbid_entity
    parser.ExternalEntityRefHandler = _forbid_external
    parser.StartElementHandler = start
    if end is not None:
        parser.EndElementHandler = end
    left = min(info.file_size, limits.zip_max_uncompressed)
    try:
        with archive.open(info) as raw:
            while chunk := raw.read(min(_CHUNK, left + 1)):
                left -= len(chunk)
                if left < 0:
                    raise Unreadable(
                        f"3MF entry {info.filename[:80]!r} inflates past its declared "
                        f"{info.file_size:,} bytes; refused as a probable zip bomb"
                    )
                parser.Parse(chunk, False)
            parser.Parse(b"", True)
    except DefusedXmlException:
        raise Unreadable(
            f"3MF part {info.filename[:80]!r} declares a DTD or entities, which 3MF does not allow"
        ) from None
    except expat.ExpatError as exc:
        raise Unreadable(f"3MF part {info.filename[:80]!r} is not valid XML: {exc}") from None
    except (
        zipfile.BadZipFile,
        zlib.error,
        EOFError,
        NotImplementedError,
        RuntimeError,  # encrypted
        ValueError,  # zipfile's for a bad header offset or a name not in the UTF-8 it claims
    ) as exc:
        raise Unreadable(
            f"3MF entry {info.filename[:80]!r} cannot be read: {_one_line(exc)}"
        ) from None


_LOCAL_NAMES: dict[str, str] = {}


def _local(name: str) -> str:
    """``vertex`` for ``http://schemas.microsoft.com/3dmanufacturing/core/2015/02}vertex``."""
    local = _LOCAL_NAMES.get(name)
    if local is None:
        local = name.rpartition("}")[2]
        if len(_LOCAL_NAMES) < 1024:
            _LOCAL_NAMES[name] = local
    return local


def _attribute(attrs: dict[str, str], local_name: str) -> str | None:
    """An attribute by local name, whatever namespace prefix (``p:path``) it carries."""
    value = attrs.get(local_name)
    if value is not None:
        return value
    suffix = "}" + local_name
    return next((v for k, v in attrs.items() if k.endswith(suffix)), None)


def _transform(text: str | None, where: str) -> np.ndarray:
    """A 3MF ``transform`` (12 numbers, row-vector convention) as a 4x4 matrix for p @ M."""
    if text is None:
        return _IDENTITY
    try:
        values = np.array(text.split(), dtype=np.float64)
    except ValueError:
        raise Unreadable(f"3MF {where} has a transform that is not numbers") from None
    if values.shape != (12,):
        raise Unreadable(f"3MF {where} transform has {values.size} numbers, not 12")
    matrix = np.eye(4)
    matrix[:, :3] = values.reshape(4, 3)
    return matrix


class _PartReader:
    """Model parts of one archive, each parsed once, on first use."""

    def __init__(
        self, archive: zipfile.ZipFile, entries: dict[str, zipfile.ZipInfo], limits: ReadLimits
    ) -> None:
        self._archive = archive
        self._entries = entries
        self._limits = limits
        self._parts: dict[str, _ModelPart] = {}

    def part(self, path: str) -> _ModelPart:
        if path not in self._parts:
            info = self._entries.get(path)
            if info is None:
                raise Unreadable(f"3MF refers to model part {path[:80]!r}, which is not in it")
            model = _ModelParser(path, self._limits)
            _parse_entry(self._archive, info, self._limits, model.start, model.end)
            self._parts[path] = model.part
        return self._parts[path]


class _ModelParser:
    """Expat handlers gathering one model part's objects and build items."""

    def __init__(self, path: str, limits: ReadLimits) -> None:
        self.part = _ModelPart(unit=None, objects={}, items=[])
        self._path = path
        self._limits = limits
        self._object: _Object | None = None
        self._object_id = ""
        self._coordinates: list[str | None] = []
        self._corners: list[str | None] = []
        self._triangles = 0

    def start(self, name: str, attrs: dict[str, str]) -> None:
        tag = _local(name)
        if tag == "vertex":
            self._coordinates += (attrs.get("x"), attrs.get("y"), attrs.get("z"))
        elif tag == "triangle":
            self._corners += (attrs.get("v1"), attrs.get("v2"), attrs.get("v3"))
            self._triangles += 1
            if self._triangles > self._limits.max_triangles:
                _check_triangle_count(self._triangles, self._limits, f"3MF part {self._path!r}")
        elif tag == "model":
            self.part.unit = attrs.get("unit")
        elif tag == "object":
            self._object_id = attrs.get("id", "")
            self._object = _Object(name=attrs.get("name") or f"object {self._object_id}")
            self._coordinates, self._corners = [], []
        elif tag == "component" and self._object is not None:
            where = f"object {self._object_id} component"
            self._object.components.append(_reference(attrs, where))
        elif tag == "item":
            self.part.items.append(_reference(attrs, "build item"))

    def end(self, name: str) -> None:
        tag = _local(name)
        if tag == "mesh" and self._object is not None:
            self._object.vertices, self._object.triangles = _mesh_arrays(
                self._coordinates, self._corners, self._object_id
            )
            self._coordinates, self._corners = [], []
        elif tag == "object" and self._object is not None:
            if self._object_id in self.part.objects:
                raise Unreadable(f"3MF part {self._path!r} defines object {self._object_id} twice")
            self.part.objects[self._object_id] = self._object
            self._object = None


def _reference(attrs: dict[str, str], where: str) -> tuple[str, np.ndarray, str | None]:
    object_id = attrs.get("objectid")
    if object_id is None:
        raise Unreadable(f"3MF {where} has no objectid")
    return object_id, _transform(attrs.get("transform"), where), _attribute(attrs, "path")


def _mesh_arrays(
    coordinates: list[str | None], corners: list[str | None], object_id: str
) -> tuple[np.ndarray, np.ndarray]:
    if None in coordinates or None in corners:
        raise Unreadable(f"3MF object {object_id} has a vertex or triangle missing an attribute")
    try:
        vertices = np.array(coordinates, dtype=np.float64).reshape(-1, 3)
        triangles = np.array(corners, dtype=np.int64).reshape(-1, 3)
    except (ValueError, OverflowError):
        raise Unreadable(
            f"3MF object {object_id} has a vertex or index that is not a number"
        ) from None
    if triangles.size and (triangles.min() < 0 or triangles.max() >= len(vertices)):
        raise Unreadable(
            f"3MF object {object_id} has a triangle index outside its {len(vertices)} vertices"
        )
    return vertices, triangles


def _build_mesh(root: _ModelPart, reader: _PartReader, limits: ReadLimits) -> MeshData:
    unit = root.unit or "millimeter"
    if unit not in UNIT_TO_MM:
        raise Unreadable(f"3MF unit {unit[:40]!r} is not one of {', '.join(UNIT_TO_MM)}")
    if not root.items:
        raise Unreadable("3MF build lists no items to make")
    build = _Build(root, reader, limits)
    names: list[str] = []
    taken: set[str] = set()
    for number, (object_id, transform, path) in enumerate(root.items):
        part_path = _part_path(path) if path else None
        obj = build.lookup(object_id, part_path)
        names.append(_unique_name(obj.name, taken) if obj.name in taken else obj.name)
        taken.add(names[-1])
        build.place(obj, transform, part_path, number, depth=0)
    if build.triangles == 0:
        raise Unreadable("3MF build holds no triangles")
    vertices, faces, owner, offset = [], [], [], 0
    for obj, transform, number in build.pieces:
        vertices.append(obj.vertices @ transform[:3, :3] + transform[3, :3])
        faces.append(obj.triangles + offset)
        owner.append(np.full(len(obj.triangles), number, dtype=np.int32))
        offset += len(obj.vertices)
    return MeshData(
        vertices=np.concatenate(vertices) * UNIT_TO_MM[unit],
        faces=np.concatenate(faces),
        source_format="3mf",
        objects=tuple(names),
        object_of_face=np.concatenate(owner),
        unit=root.unit or "mm",
    )


class _Build:
    """Every mesh the build items place, each with its transform and the item it belongs to.

    Components may place the same object many times and nest: the caps count placements and
    triangles as they are placed, so a small file cannot ask for an exponential number."""

    def __init__(self, root: _ModelPart, reader: _PartReader, limits: ReadLimits) -> None:
        self.pieces: list[tuple[_Object, np.ndarray, int]] = []
        self.triangles = 0
        self._placements = 0
        self._root = root
        self._reader = reader
        self._limits = limits

    def lookup(self, object_id: str, path: str | None) -> _Object:
        part = self._reader.part(path) if path else self._root
        obj = part.objects.get(object_id)
        if obj is None:
            where = f" in {path!r}" if path else ""
            raise Unreadable(f"3MF refers to object {object_id}{where}, which it does not define")
        return obj

    def place(
        self, obj: _Object, transform: np.ndarray, path: str | None, number: int, depth: int
    ) -> None:
        if depth > _MAX_COMPONENT_DEPTH:
            raise Unreadable("3MF components nest too deep (or refer to themselves)")
        self._placements += 1
        if self._placements > self._limits.max_placements:
            raise Unreadable(
                f"3MF build places objects more than {self._limits.max_placements:,} times"
            )
        if obj.triangles is not None:
            self.pieces.append((obj, transform, number))
            self.triangles += len(obj.triangles)
            _check_triangle_count(self.triangles, self._limits, "the 3MF build")
        for object_id, local, component_path in obj.components:
            child_path = _part_path(component_path) if component_path else path
            child = self.lookup(object_id, child_path)
            self.place(child, local @ transform, child_path, number, depth + 1)


def _unique_name(name: str, taken: set[str]) -> str:
    copy = 2
    while f"{name} ({copy})" in taken:
        copy += 1
    return f"{name} ({copy})"


_READERS: dict[str, Callable[..., MeshData]] = {
    ".stl": read_stl,
    ".3mf": read_3mf,
    ".obj": read_obj,
    ".ply": read_ply,
}
