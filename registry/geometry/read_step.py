"""STEP (ISO 10303-21) files: B-rep solids read with OpenCASCADE (OCP), checked, then meshed.

The file is read by OCCT's STEP reader, which applies its usual shape healing and converts the
file's length unit to millimetres. ``BRepCheck_Analyzer`` then says whether the healed B-rep is
valid (its verdict travels on the mesh as ``brep_valid`` and ``brep_problems``), and
``BRepMesh_IncrementalMesh`` tessellates every face so the mesh checks can run as for any
other format.

OCP is imported inside the functions: loading it takes over a second, and most callers only
read meshes. Reading holds a lock, since OCCT's messenger and unit setting are process-wide.
"""

from __future__ import annotations

import math
import re
import tempfile
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from registry.geometry.limits import LIMITS, ReadLimits, check_triangle_count, one_line
from registry.geometry.mesh import MeshData, Unreadable

# Tessellation: the chordal deflection is this share of the bounding-box diagonal, kept between
# the two bounds (mm). 0.1% keeps the mesh volume within a fraction of a percent of the B-rep's
# for ordinary parts; 0.01 mm is finer than any fablab process resolves, and 0.5 mm stops a
# metre-sized part from turning into millions of triangles.
RELATIVE_DEFLECTION = 1e-3
MIN_DEFLECTION_MM = 0.01
MAX_DEFLECTION_MM = 0.5
ANGULAR_DEFLECTION_RAD = 0.5

_MAGIC = b"ISO-10303-21"
_LEADING = b"\xef\xbb\xbf \t\r\n"  # a UTF-8 byte order mark or blank lines before the magic
_PARSE_ERROR = re.compile(r"\*+\s*ERR\s+StepFile\s*:\s*(.*?)\s*\*+\s*$", re.MULTILINE)
_LOCK = threading.Lock()


def read_step(data: bytes, *, limits: ReadLimits = LIMITS) -> MeshData:
    """The tessellated shapes of a STEP file, in mm, with the B-rep validity verdict."""
    if not data.lstrip(_LEADING).startswith(_MAGIC):
        raise Unreadable("STEP does not start with 'ISO-10303-21;'")
    with _LOCK, tempfile.TemporaryDirectory(prefix="dgml-step-") as tmp:
        path = Path(tmp) / "model.step"
        path.write_bytes(data)
        with _occt_messages(Path(tmp) / "occt.log") as messages, _length_unit_mm():
            shape, unit = _read_shape(path, messages)
            return _mesh(shape, unit, limits)


def _read_shape(path: Path, messages: Callable[[], str]) -> tuple[Any, str]:
    from OCP.IFSelect import IFSelect_RetDone
    from OCP.STEPControl import STEPControl_Reader

    reader = STEPControl_Reader()
    status = reader.ReadFile(str(path))
    if status != IFSelect_RetDone:
        found = _PARSE_ERROR.search(messages())
        detail = found.group(1) if found else f"the reader gave up ({status.name})"
        raise Unreadable(f"STEP cannot be parsed: {' '.join(detail.split())[:200]}")
    # A failed read must stop before the transfer: OCCT crashes transferring an unread model.
    if reader.NbRootsForTransfer() == 0:
        raise Unreadable("STEP holds no shape (no product or shape representation to transfer)")
    try:
        reader.TransferRoots()
        shape = reader.OneShape()
    except Exception as exc:  # OCCT raises Standard_Failure subclasses on broken entities
        raise Unreadable(f"STEP shapes cannot be built: {one_line(exc)}") from None
    if shape is None or shape.IsNull():
        raise Unreadable("STEP holds no shape that can be built")
    return shape, _file_unit(reader)


def _file_unit(reader: Any) -> str:
    from OCP.TColStd import TColStd_SequenceOfAsciiString

    lengths, angles, solid_angles = (TColStd_SequenceOfAsciiString() for _ in range(3))
    reader.FileUnits(lengths, angles, solid_angles)
    names = {lengths.Value(i).ToCString().lower() for i in range(1, lengths.Length() + 1)}
    if not names:
        return "mm"
    return names.pop() if len(names) == 1 else "mixed (" + ", ".join(sorted(names)) + ")"


def _mesh(shape: Any, unit: str, limits: ReadLimits) -> MeshData:
    from OCP.Bnd import Bnd_Box
    from OCP.BRepBndLib import BRepBndLib
    from OCP.BRepCheck import BRepCheck_Analyzer
    from OCP.BRepMesh import BRepMesh_IncrementalMesh

    groups = _face_groups(shape)
    if not any(faces for _, faces in groups):
        raise Unreadable("STEP holds no surfaces (only curves or points): nothing to make")
    analyzer = BRepCheck_Analyzer(shape)
    valid = bool(analyzer.IsValid())
    problems = () if valid else brep_problems(shape, analyzer)

    box = Bnd_Box()
    BRepBndLib.Add_s(shape, box, False)
    if box.IsVoid():
        raise Unreadable("STEP shapes have no extent")
    diagonal = math.sqrt(box.SquareExtent())
    deflection = min(max(diagonal * RELATIVE_DEFLECTION, MIN_DEFLECTION_MM), MAX_DEFLECTION_MM)
    BRepMesh_IncrementalMesh(shape, deflection, False, ANGULAR_DEFLECTION_RAD, True)

    triangulated, missing = _triangulations(groups)
    total = sum(t.NbTriangles() for _, tris in triangulated for t, _, _ in tris)
    check_triangle_count(total, limits, "the tessellated STEP")
    if total == 0:
        raise Unreadable(f"none of the STEP file's {missing} faces could be tessellated")

    vertices: list[np.ndarray] = []
    faces: list[np.ndarray] = []
    counts: list[int] = []
    names: list[str] = []
    offset = 0
    for name, tris in triangulated:
        count = 0
        for triangulation, location, flip in tris:
            nodes, corners = _face_arrays(triangulation, location, flip)
            vertices.append(nodes)
            faces.append(corners + offset)
            offset += nodes.shape[0]
            count += corners.shape[0]
        if count:
            names.append(name)
            counts.append(count)
    notes = [f"tessellated with a chordal deflection of {deflection:.3g} mm"]
    if missing:
        notes.append(f"{missing} faces could not be tessellated and are missing from the mesh")
    return MeshData(
        vertices=np.concatenate(vertices),
        faces=np.concatenate(faces),
        source_format="step",
        objects=tuple(names),
        object_of_face=np.repeat(np.arange(len(counts), dtype=np.int32), counts),
        unit=unit,
        notes=tuple(notes),
        brep_valid=valid,
        brep_problems=problems,
    )


def _face_groups(shape: Any) -> list[tuple[str, list[Any]]]:
    """Faces by solid (each placement of a solid is its own), then the faces of no solid."""
    from OCP.TopAbs import TopAbs_FACE, TopAbs_SOLID
    from OCP.TopExp import TopExp_Explorer
    from OCP.TopoDS import TopoDS

    def explore(of: Any, kind: Any, avoid: Any = None) -> Iterator[Any]:
        explorer = TopExp_Explorer(of, kind) if avoid is None else TopExp_Explorer(of, kind, avoid)
        while explorer.More():
            yield explorer.Current()
            explorer.Next()

    solids = [
        [TopoDS.Face_s(f) for f in explore(s, TopAbs_FACE)] for s in explore(shape, TopAbs_SOLID)
    ]
    loose = [TopoDS.Face_s(f) for f in explore(shape, TopAbs_FACE, TopAbs_SOLID)]
    groups = [(f"solid {i}", faces) for i, faces in enumerate(solids, 1)]
    if len(groups) == 1:
        groups = [("solid", solids[0])]
    if loose:
        groups.append(("faces outside any solid" if groups else "surfaces", loose))
    return groups


def _triangulations(
    groups: list[tuple[str, list[Any]]],
) -> tuple[list[tuple[str, list[tuple[Any, Any, bool]]]], int]:
    """Each face's triangulation, its placement, and whether its winding must be flipped."""
    from OCP.BRep import BRep_Tool
    from OCP.TopAbs import TopAbs_REVERSED
    from OCP.TopLoc import TopLoc_Location

    missing = 0
    result = []
    for name, faces in groups:
        found = []
        for face in faces:
            location = TopLoc_Location()
            triangulation = BRep_Tool.Triangulation_s(face, location)
            if triangulation is None or triangulation.NbTriangles() == 0:
                missing += 1
                continue
            # a mirroring placement turns the face inside out, as a reversed face does
            flip = (face.Orientation() == TopAbs_REVERSED) != location.Transformation().IsNegative()
            found.append((triangulation, location, flip))
        result.append((name, found))
    return result, missing


def _face_arrays(triangulation: Any, location: Any, flip: bool) -> tuple[np.ndarray, np.ndarray]:
    """(n, 3) node positions in the shape's frame and (m, 3) 0-based triangles of one face.

    OCP gives no array view of a triangulation, so nodes and triangles are fetched one call
    each; the placement is then applied to all nodes at once.
    """
    node_count, triangle_count = triangulation.NbNodes(), triangulation.NbTriangles()
    nodes = np.array(
        [triangulation.Node(i).Coord() for i in range(1, node_count + 1)], dtype=np.float64
    ).reshape(-1, 3)
    corners = np.array(
        [triangulation.Triangle(i).Get() for i in range(1, triangle_count + 1)], dtype=np.int64
    ).reshape(-1, 3)
    corners -= 1
    if not location.IsIdentity():
        trsf = location.Transformation()
        matrix = np.array([[trsf.Value(r, c) for c in range(1, 5)] for r in range(1, 4)])
        nodes = nodes @ matrix[:, :3].T + matrix[:, 3]
    if flip:
        corners = corners[:, ::-1].copy()
    return nodes, corners


def brep_problems(shape: Any, analyzer: Any) -> tuple[str, ...]:
    """What ``BRepCheck_Analyzer`` found wrong, one entry per kind of fault, e.g.
    ``"self intersecting wire (2 wires)"``, most frequent first."""
    from OCP.BRepCheck import BRepCheck_Status
    from OCP.TopAbs import (
        TopAbs_EDGE,
        TopAbs_FACE,
        TopAbs_SHELL,
        TopAbs_SOLID,
        TopAbs_VERTEX,
        TopAbs_WIRE,
    )
    from OCP.TopExp import TopExp
    from OCP.TopTools import TopTools_IndexedMapOfShape

    kinds = (
        (TopAbs_VERTEX, "vertex", "vertices"),
        (TopAbs_EDGE, "edge", "edges"),
        (TopAbs_WIRE, "wire", "wires"),
        (TopAbs_FACE, "face", "faces"),
        (TopAbs_SHELL, "shell", "shells"),
        (TopAbs_SOLID, "solid", "solids"),
    )
    found: Counter[tuple[str, str, str]] = Counter()
    for kind, singular, plural in kinds:
        shapes = TopTools_IndexedMapOfShape()
        TopExp.MapShapes_s(shape, kind, shapes)
        for i in range(1, shapes.Extent() + 1):
            result = analyzer.Result(shapes.FindKey(i))
            if result is None:
                continue
            statuses = set(result.Status())
            # faults seen in the context of a containing shape (an edge on a given face)
            result.InitContextIterator()
            while result.MoreShapeInContext():
                statuses.update(result.StatusOnShape())
                result.NextShapeInContext()
            statuses.discard(BRepCheck_Status.BRepCheck_NoError)
            for status in statuses:
                found[(_status_words(status.name), singular, plural)] += 1
    if not found:
        return ("BRepCheck reports the shape invalid without naming a fault",)
    return tuple(
        f"{words} ({count} {singular if count == 1 else plural})"
        for (words, singular, plural), count in found.most_common()
    )


def _status_words(name: str) -> str:
    """``BRepCheck_SelfIntersectingWire`` -> ``self intersecting wire``."""
    name = name.removeprefix("BRepCheck_")
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name).lower()


@contextmanager
def _occt_messages(log: Path) -> Iterator[Callable[[], str]]:
    """Send OCCT's messages to ``log`` instead of standard output (where they would spoil
    ``--json`` output); yields a function returning what was logged so far."""
    from OCP.Message import Message, Message_Gravity, Message_PrinterOStream

    messenger = Message.DefaultMessenger_s()
    saved = list(messenger.Printers())
    for printer in saved:
        messenger.RemovePrinter(printer)
    printer = Message_PrinterOStream(str(log), False, Message_Gravity.Message_Fail)
    printer.SetToColorize(False)
    messenger.AddPrinter(printer)

    def logged() -> str:
        printer.Close()  # flushes; later messages are dropped
        return log.read_text(encoding="utf-8", errors="replace") if log.exists() else ""

    try:
        yield logged
    finally:
        messenger.RemovePrinter(printer)
        printer.Close()
        for kept in saved:
            messenger.AddPrinter(kept)


@contextmanager
def _length_unit_mm() -> Iterator[None]:
    """Have the STEP reader convert lengths to millimetres, whatever the process set before."""
    from OCP.Interface import Interface_Static
    from OCP.STEPControl import STEPControl_Controller

    STEPControl_Controller.Init_s()  # declares the reader's settings on first use
    previous = Interface_Static.CVal_s("xstep.cascade.unit")
    if previous != "MM":
        Interface_Static.SetCVal_s("xstep.cascade.unit", "MM")
    try:
        yield
    finally:
        if previous and previous != "MM":
            Interface_Static.SetCVal_s("xstep.cascade.unit", previous)
