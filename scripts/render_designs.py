"""Render ``preview.png`` for every design in designs/ (or the ones named): build it at its
defaults in the sandbox, read the parts back and draw them together with the project's own
rasteriser, as the registry draws version previews.

    .venv/bin/python scripts/render_designs.py [NAME ...]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from registry.geometry.preview import render_png  # noqa: E402
from registry.geometry.readers import read_model  # noqa: E402
from registry.parametric.build import build_design, load_folder  # noqa: E402


def render(folder: Path, size: int = 512) -> Path:
    script, manifest = load_folder(folder)
    with tempfile.TemporaryDirectory(prefix="dgml-render-") as tmp:
        result = build_design(script, manifest, {}, Path(tmp))
        if not result.ok:
            raise SystemExit(f"{folder.name}: the build failed: {result.error}")
        vertices, faces, offset = [], [], 0
        for part in result.parts:
            stl = next(f for f in part.files if f.path.endswith(".stl"))
            mesh = read_model(Path(tmp) / stl.path, stl.path)
            vertices.append(np.asarray(mesh.vertices, np.float64))
            faces.append(np.asarray(mesh.faces, np.int64) + offset)
            offset += mesh.vertices.shape[0]
    target = folder / "preview.png"
    target.write_bytes(render_png(np.vstack(vertices), np.vstack(faces), size=size))
    return target


def main(names: list[str]) -> int:
    folders = sorted(p for p in (ROOT / "designs").iterdir() if (p / "design.py").exists())
    if names:
        folders = [f for f in folders if f.name in names]
    for folder in folders:
        print(render(folder).relative_to(ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
