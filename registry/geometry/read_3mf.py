"""3MF: a zip archive of XML model parts. The archive is checked before anything is inflated,
entries are read with bounded reads, and the XML is streamed through expat with defusedxml's
rules (no DTDs, no entities, no external references)."""

from __future__ import annotations

import io
import posixpath
import re
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from xml.parsers import expat

import numpy as np
from defusedxml import (
    DefusedXmlException,
    DTDForbidden,
    EntitiesForbidden,
    ExternalReferenceForbidden,
)

from registry.geometry.limits import LIMITS, ReadLimits, check_triangle_count, one_line
from registry.geometry.mesh import MeshData, Unreadable

# 3MF core specification, "unit" attribute of <model>.
UNIT_TO_MM = {
    "micron": 0.001,
    "millimeter": 1.0,
    "centimeter": 10.0,
    "inch": 25.4,
    "foot": 304.8,
    "meter": 1000.0,
}

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
        raise Unreadable(f"3MF is not a readable zip archive: {one_line(exc)}") from None
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
            f"3MF entry {info.filename[:80]!r} cannot be read: {one_line(exc)}"
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
                check_triangle_count(self._triangles, self._limits, f"3MF part {self._path!r}")
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
            check_triangle_count(self.triangles, self._limits, "the 3MF build")
        for object_id, local, component_path in obj.components:
            child_path = _part_path(component_path) if component_path else path
            child = self.lookup(object_id, child_path)
            self.place(child, local @ transform, child_path, number, depth + 1)


def _unique_name(name: str, taken: set[str]) -> str:
    copy = 2
    while f"{name} ({copy})" in taken:
        copy += 1
    return f"{name} ({copy})"
