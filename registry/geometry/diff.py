"""How two versions of a model differ: volume, area and size deltas, and a sampled two-sided
surface distance (how far the surface of each lies from the other's, in mm)."""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel

from registry.geometry.checks import check_mesh
from registry.geometry.mesh import MeshData

# Points sampled on each surface: enough for a stable 95th percentile, and a second or two of
# exact closest-point queries on a part of a few hundred thousand triangles.
DEFAULT_SAMPLES = 2000


class SurfaceDistance(BaseModel):
    """Distances from points sampled on one surface to the other surface, both ways, in mm."""

    max_mm: float
    mean_mm: float
    p95_mm: float
    samples: int


class ModelDiff(BaseModel):
    volume_mm3: tuple[float | None, float | None]
    volume_delta_mm3: float | None
    area_delta_mm2: float | None
    size_delta_mm: list[float] | None
    distance: SurfaceDistance | None


def _trimesh(mesh: MeshData):
    import trimesh

    finite = np.isfinite(mesh.vertices).all(axis=1)
    faces = mesh.faces[finite[mesh.faces].all(axis=1)]
    return trimesh.Trimesh(mesh.vertices, faces, process=False)


def surface_distance(a: MeshData, b: MeshData, samples: int, seed: int = 0) -> SurfaceDistance:
    import trimesh

    first, second = _trimesh(a), _trimesh(b)
    distances = []
    for source, target in ((first, second), (second, first)):
        points, _ = trimesh.sample.sample_surface(source, samples, seed=seed)
        _, distance, _ = trimesh.proximity.closest_point(target, points)
        distances.append(distance)
    both = np.concatenate(distances)
    return SurfaceDistance(
        max_mm=round(float(both.max()), 4),
        mean_mm=round(float(both.mean()), 4),
        p95_mm=round(float(np.percentile(both, 95)), 4),
        samples=len(both),
    )


def model_diff(old: MeshData, new: MeshData, *, samples: int = DEFAULT_SAMPLES) -> ModelDiff:
    """What changed from ``old`` to ``new``; ``None`` where a figure cannot be had (an open mesh
    has no volume, an empty one no surface)."""
    before, after = check_mesh(old).metrics, check_mesh(new).metrics

    def delta(x: float | None, y: float | None) -> float | None:
        return None if x is None or y is None else round(y - x, 4)

    size = (
        [round(b - a, 4) for a, b in zip(before.size_mm, after.size_mm, strict=True)]
        if before.size_mm and after.size_mm
        else None
    )
    distance = (
        surface_distance(old, new, samples) if old.triangle_count and new.triangle_count else None
    )
    return ModelDiff(
        volume_mm3=(before.volume_mm3, after.volume_mm3),
        volume_delta_mm3=delta(before.volume_mm3, after.volume_mm3),
        area_delta_mm2=delta(before.area_mm2, after.area_mm2),
        size_delta_mm=size,
        distance=distance,
    )
