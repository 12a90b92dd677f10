"""The parts a script shows, written as files (runs in the sandboxed child, after the script).

Decisions:

- A part is what one ``show_object(shape, name=None)`` call gave, or the top-level ``result``
  when the script never called it. A ``cq.Workplane`` is the compound of the shapes on its
  stack, a ``cq.Assembly`` the compound of its parts (placed), a ``cq.Shape`` itself.
- Names become file names: letters, digits, ``.``, ``_`` and ``-``, at most 64 characters;
  unnamed parts are ``part``, ``part-2``, ...; a repeated name gets ``-2``, ``-3``.
- STL is binary, tessellated with a deflection of 0.1% of the part's diagonal (kept between
  0.01 and 0.5 mm, as the STEP reader does) and an angular deflection of 0.1 rad; STEP is
  written by OpenCascade in millimetres.
- For laser cutting, the STL is read back and ``registry.geometry.dxf.dxf_for`` gives the
  outline, exactly as ``dgml validate --process laser --dxf`` does; a part that is not a
  flat sheet gets no DXF and a note saying why.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field

OUT_DIR = "out"
MAX_PARTS = 64
NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass
class Written:
    name: str
    files: list[str]
    notes: list[str] = field(default_factory=list)


class ExportError(Exception):
    """A part that cannot be written; the message is one line naming the part."""


def part_names(names: list[str | None]) -> list[str]:
    """File-safe, unique names for parts shown with ``names`` (None: unnamed)."""
    chosen: list[str] = []
    unnamed = 0
    for name in names:
        if name is None or not str(name).strip():
            unnamed += 1
            base = "part" if unnamed == 1 else f"part-{unnamed}"
        else:
            base = _UNSAFE.sub("-", str(name).strip())
            base = re.sub(r"\.{2,}", ".", base).lstrip(".-")[:64] or "part"
        candidate, n = base, 1
        while candidate in chosen:
            n += 1
            candidate = f"{base[:60]}-{n}"
        chosen.append(candidate)
    return chosen


def as_shape(obj, name: str):
    """The ``cq.Shape`` to export for what the script showed."""
    cq = sys.modules.get("cadquery")  # a script that never named CadQuery showed no shape
    if cq is None:
        raise ExportError(_not_a_shape(obj, name))
    if isinstance(obj, cq.Assembly):
        shape = obj.toCompound()
    elif isinstance(obj, cq.Workplane):
        shapes = [v for v in obj.vals() if isinstance(v, cq.Shape)]
        if not shapes:
            raise ExportError(f"part {name!r}: the workplane holds no shapes")
        shape = shapes[0] if len(shapes) == 1 else cq.Compound.makeCompound(shapes)
    elif isinstance(obj, cq.Shape):
        shape = obj
    else:
        raise ExportError(_not_a_shape(obj, name))
    if shape.wrapped is None or shape.wrapped.IsNull() or not shape.Faces():
        raise ExportError(f"part {name!r} has no faces to export")
    return shape


def _not_a_shape(obj, name: str) -> str:
    return f"part {name!r} is a {type(obj).__name__}, not a CadQuery Workplane, Shape or Assembly"


def stl_tolerance(shape) -> float:
    diagonal = shape.BoundingBox().DiagonalLength
    return min(max(diagonal * 1e-3, 0.01), 0.5)


def write_part(obj, name: str, laser: bool) -> Written:
    """Write part ``name`` into ``out/``: STL, STEP and, for a flat laser part, DXF."""
    shape = as_shape(obj, name)
    written = Written(name, [])
    stl = f"{OUT_DIR}/{name}.stl"
    # absolute deflection (relative=False), one thread: the sandbox caps processes and threads
    if not shape.exportStl(
        stl, stl_tolerance(shape), 0.1, ascii=False, relative=False, parallel=False
    ):
        raise ExportError(f"part {name!r}: the STL could not be written")
    written.files.append(f"{name}.stl")
    step = f"{OUT_DIR}/{name}.step"
    from OCP.IFSelect import IFSelect_ReturnStatus

    if shape.exportStep(step) != IFSelect_ReturnStatus.IFSelect_RetDone:
        raise ExportError(f"part {name!r}: the STEP file could not be written")
    written.files.append(f"{name}.step")
    if laser:
        from registry.geometry.dxf import NotFlatError, dxf_for
        from registry.geometry.mesh import Unreadable
        from registry.geometry.readers import read_model

        with open(stl, "rb") as file:
            data = file.read()
        try:
            drawing = dxf_for(read_model(data, f"{name}.stl"))
        except (NotFlatError, Unreadable) as exc:
            written.notes.append(f"part {name!r} gets no DXF: {exc}")
        else:
            with open(f"{OUT_DIR}/{name}.dxf", "wb") as file:
                file.write(drawing)
            written.files.append(f"{name}.dxf")
    return written


def write_parts(shown: list, laser: bool, parts: list, notes: list) -> None:
    """Write every part the script showed (``(name, object)`` pairs, at most ``MAX_PARTS``)
    into ``out/``, adding ``{name, files}`` to ``parts`` and what was left out to ``notes``.
    The sandboxed child and the in-process benchmark both call this, so they do the same work."""
    os.makedirs(OUT_DIR, exist_ok=True)
    names = part_names([n for n, _ in shown[:MAX_PARTS]])
    for name, (_, obj) in zip(names, shown, strict=False):
        written = write_part(obj, name, laser)
        parts.append({"name": written.name, "files": written.files})
        notes += written.notes
    if len(shown) > MAX_PARTS:
        notes.append(f"only the first {MAX_PARTS} parts were written")
