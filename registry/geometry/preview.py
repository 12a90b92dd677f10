"""Previews of a model: a GLB for web viewers and a PNG thumbnail, without any GL or display.

Decisions:

- The GLB (binary glTF 2.0, written by trimesh) holds the welded mesh with vertex normals that
  are smooth across edges where the faces meet at less than ``CREASE_DEG`` and split where they
  meet more sharply, so curved surfaces look curved and a box keeps its edges. glTF counts in
  metres with Y up; models here are millimetres with Z up (as slicers have them), so the GLB is
  scaled by 0.001 and turned (x, y, z) -> (x, z, -y), which is what viewers expect.
- Past ``MAX_GLB_TRIANGLES`` (2 million: some 60 MB of GLB, more than a browser should fetch
  for a preview) the mesh is simplified by vertex clustering: corners are welded on a grid
  coarse enough to bring it under ``GLB_TARGET_TRIANGLES``, and faces that collapse or repeat
  are dropped. It is coarse but needs nothing beyond numpy, and ``Previews.notes`` says so.
- The PNG is drawn by a small software rasteriser: an orthographic view from the front, right
  and above (the isometric direction), fitted to the part, with a z-buffer and flat Lambert
  shading lit from above and the front-left, two-sided so that open or inside-out meshes still show,
  on a light neutral background. It renders at twice the size and averages down (smooth edges).
  Faces are rasterised in chunks (every candidate pixel of a chunk's bounding boxes at once),
  so a 1.3-million-face mesh takes about a second.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_array
from scipy.sparse.csgraph import connected_components

from registry.geometry.checks import Tolerances, collapsed_faces, weld
from registry.geometry.mesh import MeshData

MAX_GLB_TRIANGLES = 2_000_000
GLB_TARGET_TRIANGLES = 1_000_000
# Neighbouring faces meeting at more than this are drawn with a sharp edge between them.
CREASE_DEG = 30.0
# The view: from the front (-Y), the right (+X) and above (+Z); the light from above, the front
# and a little to the left, so that a box's three faces come out in three shades.
VIEW = np.array([1.0, -1.0, 1.0]) / np.sqrt(3.0)
LIGHT = np.array([0.35, -0.6, 0.9]) / np.linalg.norm([0.35, -0.6, 0.9])
BACKGROUND = (238, 240, 243)
COLOUR = np.array([118.0, 163.0, 222.0])  # a steel blue, fully lit
AMBIENT, DIFFUSE = 0.3, 0.7
_SUPERSAMPLE = 2
_MARGIN = 0.06  # of the image, around the part
_CHUNK_PIXELS = 1 << 20  # candidate pixels tested at once


@dataclass(frozen=True)
class Previews:
    """``glb`` bytes (None when there is nothing to show), ``png`` bytes, and ``notes`` on
    what was done to them (simplification, skipped faces)."""

    glb: bytes | None
    png: bytes
    notes: tuple[str, ...] = ()


# ----------------------------------------------------------------------------- the GLB


def _face_normals(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(m, 3) unit normals (zero for faces without area) and (m,) doubled areas, a chunk of
    faces at a time so that the temporary arrays stay small."""
    normal = np.empty((faces.shape[0], 3))
    for start in range(0, faces.shape[0], 1 << 16):
        rows = slice(start, start + (1 << 16))
        tri = np.take(vertices, faces[rows].reshape(-1), axis=0).reshape(-1, 3, 3)
        normal[rows] = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    doubled = np.sqrt(np.einsum("ij,ij->i", normal, normal))
    normal /= np.maximum(doubled, 1e-300)[:, None]
    return normal, doubled


def crease_normals(vertices: np.ndarray, faces: np.ndarray, crease_deg: float = CREASE_DEG):
    """Split the welded mesh's vertices where faces meet at a crease, with a normal for each.

    Every corner of every face is a node; the corners of two faces at either end of an edge
    the two share (and only they share) are joined when the faces' normals are within
    ``crease_deg``. Each connected group of corners becomes one vertex, with the area-weighted
    mean normal of its faces. Returns vertices (g, 3), normals (g, 3) and faces (m, 3) into them.
    """
    m = faces.shape[0]
    normal, doubled = _face_normals(vertices, faces)
    flat = faces.ravel()
    following = np.roll(faces, -1, axis=1).ravel()  # edge k of a face runs corner k -> k + 1
    # every edge once per face; equal keys from both sides
    key = np.minimum(flat, following).astype(np.int64)
    key *= vertices.shape[0]
    key += np.maximum(flat, following)
    del following
    order = np.argsort(key)
    key = key[order]
    same_edge = key[1:] == key[:-1]
    del key
    # edges two faces share and no third does: sorted positions p, p + 1 equal, p - 1, p + 2 not
    pair = np.flatnonzero(same_edge)
    alone = np.ones(pair.shape[0], bool)
    alone[1:] &= pair[1:] != pair[:-1] + 1
    alone[:-1] &= pair[:-1] + 1 != pair[1:]
    pair = pair[alone]
    del same_edge, alone
    first, second = order[pair], order[pair + 1]  # face * 3 + edge, on either side
    del order, pair
    smooth = np.einsum("ij,ij->i", normal[first // 3], normal[second // 3])
    keep = smooth >= np.cos(np.radians(crease_deg))
    first, second = first[keep], second[keep]
    # the corners at either end of the shared edge, matched by vertex
    first_end = first - first % 3 + (first % 3 + 1) % 3
    second_end = second - second % 3 + (second % 3 + 1) % 3
    matched = flat[first] == flat[second]
    index = np.int32 if 3 * m < 2**31 else np.int64
    links_from = np.concatenate([first, first_end]).astype(index)
    links_to = np.concatenate(
        [np.where(matched, second, second_end), np.where(matched, second_end, second)]
    ).astype(index)
    del first, second, first_end, second_end, matched
    graph = coo_array(
        (np.ones(links_from.shape[0]), (links_from, links_to)), shape=(3 * m, 3 * m)
    ).tocsr()
    del links_from, links_to
    count, group = connected_components(graph, directed=True, connection="weak")
    del graph
    summed = np.stack(
        [
            np.bincount(group, np.repeat(normal[:, k] * doubled, 3), minlength=count)
            for k in range(3)
        ],
        axis=1,
    )
    length = np.linalg.norm(summed, axis=1)
    first_corner = np.empty(count, np.int64)
    first_corner[group[::-1]] = np.arange(3 * m)[::-1]
    # a group whose faces have no area (or cancel out) keeps its first face's normal
    summed /= np.maximum(length, 1e-300)[:, None]
    flat_normal = length == 0
    summed[flat_normal] = normal[first_corner[flat_normal] // 3]
    return vertices[flat[first_corner]], summed, group.reshape(m, 3)


def _cluster(vertices: np.ndarray, faces: np.ndarray, target: int):
    """Simplify by welding corners on a grid coarse enough to leave at most ``target`` faces;
    faces that collapse or repeat are dropped. Returns vertices, faces and the grid's cell."""
    _, doubled = _face_normals(vertices, faces)
    # about one vertex per cell the surface crosses, two faces per vertex
    cell = np.sqrt(float(doubled.sum()) / target)
    while True:
        merged, merged_faces = weld(vertices, faces, Tolerances(merge=cell))
        merged_faces = merged_faces[~collapsed_faces(merged_faces)]
        _, first = np.unique(np.sort(merged_faces, axis=1), axis=0, return_index=True)
        merged_faces = merged_faces[np.sort(first)]
        if merged_faces.shape[0] <= target:
            break
        cell *= 1.4
    return merged, merged_faces, cell


def glb_bytes(vertices: np.ndarray, faces: np.ndarray) -> bytes:
    """The GLB of welded ``faces`` (m, 3) over ``vertices`` (n, 3) in mm: crease normals, in
    metres with Y up."""
    import trimesh

    split, normals, split_faces = crease_normals(vertices, faces)
    to_gltf = np.array([[1.0, 0, 0], [0, 0, 1.0], [0, -1.0, 0]])  # (x, y, z) -> (x, z, -y)
    solid = trimesh.Trimesh(
        vertices=(split @ to_gltf.T) * 0.001,
        faces=split_faces,
        vertex_normals=normals @ to_gltf.T,
        process=False,
    )
    return trimesh.exchange.gltf.export_glb(solid.scene(), include_normals=True)


# ----------------------------------------------------------------------------- the PNG


def _view_axes() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Screen right, screen up and towards the viewer, in model coordinates (Z up)."""
    right = np.cross([0.0, 0.0, 1.0], VIEW)
    right /= np.linalg.norm(right)
    return right, np.cross(VIEW, right), VIEW


def render_png(vertices: np.ndarray, faces: np.ndarray, *, size: int = 256) -> bytes:
    """A ``size`` x ``size`` PNG of ``faces`` (m, 3) over ``vertices`` (n, 3) (welded or not);
    faces with a corner that is not finite are left out."""
    from PIL import Image

    finite = np.isfinite(vertices).all(axis=1)
    if not finite.all():
        faces = faces[finite[faces].all(axis=1)]
    full = size * _SUPERSAMPLE
    image = np.empty((full, full, 3), np.uint8)
    image[:] = BACKGROUND
    if faces.shape[0]:
        right, up, towards = _view_axes()
        used = np.zeros(vertices.shape[0], bool)
        used[faces.ravel()] = True
        # screen x, y (pixels, y down) and depth (0 far .. 1 near) of every vertex
        screen = vertices[used] @ np.stack([right, up, towards], axis=1)
        low, high = screen.min(axis=0), screen.max(axis=0)
        scale = full * (1 - 2 * _MARGIN) / max(float((high[:2] - low[:2]).max()), 1e-12)
        centre = (low + high) / 2
        place = np.empty((vertices.shape[0], 3))
        place[used, 0] = (screen[:, 0] - centre[0]) * scale + full / 2
        place[used, 1] = full / 2 - (screen[:, 1] - centre[1]) * scale
        place[used, 2] = (screen[:, 2] - low[2]) / max(float(high[2] - low[2]), 1e-300)
        del screen
        nearest = np.full(full * full, -1, np.int64)
        for start in range(0, faces.shape[0], 1 << 18):
            chunk = faces[start : start + (1 << 18)]
            corners = vertices[chunk]
            normal = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
            normal /= np.maximum(np.linalg.norm(normal, axis=1), 1e-300)[:, None]
            normal *= np.where(normal @ towards < 0, -1.0, 1.0)[:, None]  # lit from either side
            shade = AMBIENT + DIFFUSE * np.clip(normal @ LIGHT, 0.0, 1.0)
            _draw(nearest, place[chunk], np.round(shade * 255).astype(np.int64), full)
        drawn = nearest >= 0
        lit = (nearest[drawn] & 0xFF).astype(np.float64) / 255
        image.reshape(-1, 3)[drawn] = np.clip(COLOUR * lit[:, None], 0, 255).astype(np.uint8)
    small = image.reshape(size, _SUPERSAMPLE, size, _SUPERSAMPLE, 3).mean(axis=(1, 3))
    out = io.BytesIO()
    Image.fromarray(np.round(small).astype(np.uint8), "RGB").save(out, "PNG", optimize=True)
    return out.getvalue()


def _draw(nearest: np.ndarray, place: np.ndarray, shade: np.ndarray, full: int) -> None:
    """Draw faces into ``nearest`` (full * full,) int64, which keeps per pixel the nearest
    face's depth (40 bits) and shade (8 bits), -1 where none is yet. ``place`` (m, 3, 3): the
    corners' screen x, y and depth in 0..1; ``shade`` (m,) 0..255."""
    x, y = place[:, :, 0], place[:, :, 1]
    level = place[:, :, 2] * ((1 << 40) - 1)
    # pixel centres (i + 0.5) inside each face's bounding box
    x0 = np.clip(np.ceil(x.min(axis=1) - 0.5), 0, full).astype(np.int64)
    x1 = np.clip(np.floor(x.max(axis=1) - 0.5), -1, full - 1).astype(np.int64)
    y0 = np.clip(np.ceil(y.min(axis=1) - 0.5), 0, full).astype(np.int64)
    y1 = np.clip(np.floor(y.max(axis=1) - 0.5), -1, full - 1).astype(np.int64)
    width, height = np.maximum(x1 - x0 + 1, 0), np.maximum(y1 - y0 + 1, 0)
    area = (x[:, 1] - x[:, 0]) * (y[:, 2] - y[:, 0]) - (x[:, 2] - x[:, 0]) * (y[:, 1] - y[:, 0])
    face = np.flatnonzero((width * height > 0) & (np.abs(area) > 1e-12))
    pixels = (width * height)[face]
    ends = np.cumsum(pixels)
    first = 0
    while first < face.shape[0]:
        done = int(ends[first - 1]) if first else 0
        last = max(first + 1, int(np.searchsorted(ends, done + _CHUNK_PIXELS, side="right")))
        count = pixels[first:last]
        owner = np.repeat(face[first:last], count)
        local = np.arange(owner.shape[0]) - np.repeat(np.cumsum(count) - count, count)
        px = x0[owner] + local % width[owner]
        py = y0[owner] + local // width[owner]
        fx, fy = x[owner] - (px + 0.5)[:, None], y[owner] - (py + 0.5)[:, None]
        # barycentric weights of the pixel centre, from the edge functions
        w0 = (fx[:, 1] * fy[:, 2] - fx[:, 2] * fy[:, 1]) / area[owner]
        w1 = (fx[:, 2] * fy[:, 0] - fx[:, 0] * fy[:, 2]) / area[owner]
        w2 = 1.0 - w0 - w1
        inside = (w0 >= 0) & (w1 >= 0) & (w2 >= 0)
        owner, w0, w1, w2 = owner[inside], w0[inside], w1[inside], w2[inside]
        z = w0 * level[owner, 0] + w1 * level[owner, 1] + w2 * level[owner, 2]
        fragment = (np.clip(z, 0, (1 << 40) - 1).astype(np.int64) << 8) | shade[owner]
        np.maximum.at(nearest, (py * full + px)[inside], fragment)
        first = last


# ----------------------------------------------------------------------------- both


def render_previews(
    mesh: MeshData,
    *,
    size: int = 256,
    welded: tuple[np.ndarray, np.ndarray] | None = None,
) -> Previews:
    """The GLB and PNG previews of ``mesh``; ``welded`` is ``checks.weld``'s result when the
    caller has it. Faces with two corners on one point are left out of the GLB."""
    notes: list[str] = []
    finite = np.isfinite(mesh.vertices).all(axis=1)
    faces = mesh.faces[finite[mesh.faces].all(axis=1)] if not finite.all() else mesh.faces
    if faces.shape[0] < mesh.faces.shape[0]:
        notes.append(
            f"{mesh.faces.shape[0] - faces.shape[0]} faces with a corner that is not "
            "finite are left out"
        )
    png = render_png(mesh.vertices, faces, size=size)
    if faces.shape[0] == 0:
        return Previews(None, png, tuple(notes))
    vertices, welded_faces = (
        welded if welded is not None else weld(mesh.vertices, faces, Tolerances())
    )
    welded_faces = welded_faces[~collapsed_faces(welded_faces)]
    if welded_faces.shape[0] > MAX_GLB_TRIANGLES:
        vertices, welded_faces, cell = _cluster(vertices, welded_faces, GLB_TARGET_TRIANGLES)
        notes.append(
            f"the GLB is simplified from {mesh.triangle_count:,} to {welded_faces.shape[0]:,} "
            f"triangles (vertices clustered on a {cell:.3g} mm grid)"
        )
    glb = glb_bytes(vertices, welded_faces) if welded_faces.shape[0] else None
    return Previews(glb, png, tuple(notes))
