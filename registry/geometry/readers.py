"""Model files in, ``MeshData`` out: STL (binary and ASCII), 3MF, OBJ, PLY and STEP.

Every reader either returns a mesh in millimetres or raises ``Unreadable`` with one line a person
can act on. Readers keep what the file says, even when it is wrong (NaN coordinates, open edges):
judging the mesh is the checks' job. What they refuse is what cannot be read safely or at all:
a header that does not match the file, archives that would inflate past a cap, counts no real part
has.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path, PurePosixPath

import numpy as np

from registry.geometry.limits import LIMITS, ReadLimits, check_triangle_count, one_line
from registry.geometry.mesh import MeshData, Unreadable
from registry.geometry.read_3mf import read_3mf
from registry.geometry.read_step import read_step

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
            if suffix == ".stl" and (mesh := _read_binary_stl_file(data, limits)) is not None:
                return mesh
            data = data.read_bytes()
        except OSError as exc:
            raise Unreadable(f"{name}: cannot open the file ({exc.strerror})") from exc
    if not data:
        raise Unreadable(f"{name} is empty (0 bytes)")
    foreign = _foreign_format(data)
    expected = (
        (suffix == ".3mf" and foreign == "a zip archive")
        or (suffix in (".step", ".stp") and foreign == "a STEP file")
        # a binary STL header is 80 free bytes: its size, not its first bytes, says what it is
        or (suffix == ".stl" and _binary_stl_size_fits(data, limits))
    )
    if foreign and not expected:
        raise Unreadable(f"{name} is {foreign}, not a {suffix[1:].upper()} model")
    return reader(data, limits=limits)


def _foreign_format(data: bytes) -> str | None:
    head = data[:16]
    return next((what for magic, what in _MAGIC if head.startswith(magic)), None)


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
# Triangles per read when streaming a binary STL from disk (3.2 MB of records).
_STL_BATCH = 1 << 16
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


def _binary_stl_size_fits(data: bytes, limits: ReadLimits, size: int | None = None) -> bool:
    """Whether ``data`` (or a file of ``size`` bytes starting with ``data``) is as long as the
    triangle count in its header says a binary STL must be."""
    size = len(data) if size is None else size
    if len(data) < 84 or size < 84:
        return False
    expected = 84 + 50 * int.from_bytes(data[80:84], "little")
    return expected <= size <= expected + limits.stl_max_padding


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
    check_triangle_count(count, limits, "the binary STL header")
    records = np.frombuffer(data, dtype=_STL_RECORD, count=count, offset=84)
    # Kept in float32, as the file holds them: half the memory, and the checks compute in
    # float64 chunk by chunk.
    vertices = np.ascontiguousarray(records["corners"]).reshape(-1, 3)
    return MeshData(
        vertices=vertices,
        faces=_stl_faces(count),
        source_format="stl-binary",
        object_of_face=np.zeros(count, dtype=np.int32),
    )


def _stl_faces(count: int) -> np.ndarray:
    """STL corners are not shared: face i uses corners 3i, 3i+1, 3i+2 (int32 while they fit)."""
    kind = np.int32 if 3 * count < 2**31 else np.int64
    return np.arange(3 * count, dtype=kind).reshape(-1, 3)


def _read_binary_stl_file(path: Path, limits: ReadLimits) -> MeshData | None:
    """A binary STL read from disk a few MB at a time, so that the file is never in memory
    whole beside its vertices; None when the file is not a binary STL by its size."""
    with path.open("rb") as file:
        head = file.read(84)
        size = os.fstat(file.fileno()).st_size
        if not _binary_stl_size_fits(head, limits, size):
            return None
        count = int.from_bytes(head[80:84], "little")
        if count == 0:
            raise Unreadable("binary STL holds no triangles")
        check_triangle_count(count, limits, "the binary STL header")
        corners = np.empty((count, 3, 3), np.float32)
        for start in range(0, count, _STL_BATCH):
            records = np.fromfile(file, dtype=_STL_RECORD, count=min(_STL_BATCH, count - start))
            if records.shape[0] == 0:
                raise Unreadable("binary STL ended early: the file shrank while being read")
            corners[start : start + records.shape[0]] = records["corners"]
    return MeshData(
        vertices=corners.reshape(-1, 3),
        faces=_stl_faces(count),
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
        check_triangle_count(len(numbers), limits, "the ASCII STL")
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
        faces=_stl_faces(count),
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
                check_triangle_count(len(corners) // 3, limits, "the OBJ")
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
    check_triangle_count(counts.get(b"face", 0), limits, "the PLY header")
    if counts.get(b"vertex", 0) > 3 * limits.max_triangles:
        raise Unreadable(f"PLY header declares {counts[b'vertex']:,} vertices, too many to read")
    try:
        loaded = trimesh.load(io.BytesIO(data), file_type="ply", process=False)
    except Exception as exc:  # trimesh raises whatever its parsers hit on a damaged file
        raise Unreadable(f"PLY cannot be read: {one_line(exc)}") from None
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


_READERS: dict[str, Callable[..., MeshData]] = {
    ".stl": read_stl,
    ".3mf": read_3mf,
    ".obj": read_obj,
    ".ply": read_ply,
    ".step": read_step,
    ".stp": read_step,
}
