"""Full mesh check of a binary STL against admesh on the same file.

Two meshes: a 1.3-million-triangle icosphere (trimesh, subdivisions=8) and 3DBenchy (converted
from its 3MF to binary STL). For each, the wall time of reading the file with dgml's reader
(``read_model``) and running ``check_mesh`` (weld, edges, winding, bodies, volume...) is
compared with ``admesh FILE``, the two taking turns round after round so that both see the same
load; the ratio reported is the median of the rounds' ratios. The time of each stage of the
check is taken in one thread, and a child process measures the peak memory of read + check
(tracemalloc, which sees numpy's buffers) as a multiple of the file size.

    .venv/bin/python bench/bench_geometry.py [--rounds 5] [--output bench/results/geometry.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from registry.geometry.checks import check_mesh  # noqa: E402
from registry.geometry.readers import read_model  # noqa: E402

BENCHY = ROOT.parent / "shared" / "testdata" / "meshes" / "3DBenchy.3mf"
GOAL_RATIO = 1.0
GOAL_MEMORY = 4.0


def run_check(path: Path, parallel: bool) -> dict:
    mesh = read_model(path, path.name)
    report = check_mesh(mesh, parallel=parallel)
    return {"verdict": report.verdict.value, **report.metrics.model_dump()}


def read_3mf_single_object(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Vertices and triangles of a 3MF holding one mesh object without transforms."""
    with zipfile.ZipFile(path) as archive:
        model = archive.read("3D/3dmodel.model")
    vertex = rb'<vertex\s+x="([^"]*)"\s+y="([^"]*)"\s+z="([^"]*)"'
    triangle = rb'<triangle\s+v1="(\d+)"\s+v2="(\d+)"\s+v3="(\d+)"'
    vertices = np.array(re.findall(vertex, model), dtype=np.float64)
    faces = np.array(re.findall(triangle, model), dtype=np.int64)
    return vertices, faces


def make_files(directory: Path) -> list[tuple[str, Path]]:
    import trimesh

    files = []
    sphere = directory / "icosphere-8.stl"
    trimesh.creation.icosphere(subdivisions=8).export(sphere)
    files.append(("icosphere (1.3 M triangles)", sphere))
    if BENCHY.exists():
        benchy = directory / "3DBenchy.stl"
        vertices, faces = read_3mf_single_object(BENCHY)
        trimesh.Trimesh(vertices, faces, process=False).export(benchy)
        files.append(("3DBenchy", benchy))
    else:
        print(f"note: {BENCHY} is missing; 3DBenchy is left out", file=sys.stderr)
    return files


def wall_time(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def check_time(path: Path, parallel: bool) -> tuple[float, dict]:
    start = time.perf_counter()
    result = run_check(path, parallel)
    return time.perf_counter() - start, result


def compare_rounds(admesh: str, path: Path, rounds: int) -> tuple[dict, dict]:
    """admesh, dgml (measures in a second thread) and dgml in one thread, in turn each round;
    the medians and bests of their times and the medians of the rounds' ratios."""
    wall_time([admesh, str(path)])  # warm the page cache, numpy and scipy
    run_check(path, True)
    times: dict[str, list[float]] = {"admesh": [], "dgml": [], "one_thread": []}
    result: dict = {}
    for _ in range(rounds):
        times["admesh"].append(wall_time([admesh, str(path)]))
        seconds, result = check_time(path, parallel=True)
        times["dgml"].append(seconds)
        times["one_thread"].append(check_time(path, parallel=False)[0])
    admesh_s = np.array(times["admesh"])
    figures = {
        "admesh_s": float(np.median(admesh_s)),
        "dgml_s": float(np.median(times["dgml"])),
        "dgml_one_thread_s": float(np.median(times["one_thread"])),
        "ratio": float(np.median(np.array(times["dgml"]) / admesh_s)),
        "ratio_one_thread": float(np.median(np.array(times["one_thread"]) / admesh_s)),
        "best_s": {name: min(values) for name, values in times.items()},
        "rounds_s": times,
    }
    return figures, result


def stage_times(path: Path, rounds: int) -> dict[str, float]:
    """Median seconds of each stage of read + check, run one after the other in one thread."""
    from registry.geometry.checks import (
        Tolerances,
        analyse_edges,
        collapsed_faces,
        count_bodies,
        count_duplicate_faces,
        measure,
        weld,
    )

    tol = Tolerances()
    stages: dict[str, list[float]] = {}

    def timed(name: str, step, *args):
        start = time.perf_counter()
        value = step(*args)
        stages.setdefault(name, []).append(time.perf_counter() - start)
        return value

    for _ in range(max(1, rounds)):
        mesh = timed("read", read_model, path, path.name)
        vertices, faces = timed("weld", weld, mesh.vertices, mesh.faces, tol)
        collapsed = collapsed_faces(faces)
        solid = faces[~collapsed] if collapsed.any() else faces
        edges = timed("edges", analyse_edges, solid, vertices.shape[0])
        timed("bodies", count_bodies, solid, edges, vertices.shape[0])
        timed("duplicates", count_duplicate_faces, solid, vertices.shape[0])
        timed("measures", measure, mesh.vertices, mesh.faces, tol)
    return {name: float(np.median(values)) for name, values in stages.items()}


def wall_thickness_time(path: Path, rounds: int) -> dict:
    """Median time of the ray-cast wall-thickness measure (the FDM rule) on an already welded
    mesh, and the ray engine that ran it."""
    from registry.geometry.dfm import MAX_THICKNESS_SAMPLES, wall_thickness
    from registry.geometry.dfm_mesh import Solid

    seconds = []
    for _ in range(max(1, rounds)):
        solid = Solid.from_mesh(read_model(path, path.name))  # a fresh ray engine each time
        start = time.perf_counter()
        thickness, _ = wall_thickness(solid)
        seconds.append(time.perf_counter() - start)
    return {
        "seconds": float(np.median(seconds)),
        "best_s": min(seconds),
        "rays": min(MAX_THICKNESS_SAMPLES, solid.face_count),
        "engine": type(solid.ray).__module__.split(".")[-1],
        "min_wall_mm": float(thickness.min()) if len(thickness) else None,
    }


_CHILD = """
import json, sys, tracemalloc
sys.path.insert(0, sys.argv[1])
sys.path.insert(0, sys.argv[2])
import bench_geometry
# Modules the check imports on first use (scipy's graph routines...) are loaded by a run on a
# tiny mesh first: the figure is the memory a file costs, not the libraries'.
bench_geometry.warm_up()
tracemalloc.start()
bench_geometry.run_check(bench_geometry.Path(sys.argv[3]), sys.argv[4] == "1")
peak = tracemalloc.get_traced_memory()[1]
tracemalloc.stop()
print(json.dumps({"tracemalloc_peak": peak}))
"""


def warm_up() -> None:
    import trimesh

    with tempfile.TemporaryDirectory() as temp:
        tiny = Path(temp) / "tetra.stl"
        trimesh.creation.box().export(tiny)
        run_check(tiny, parallel=True)


def peak_memory(path: Path, parallel: bool) -> dict:
    """Peak memory of read + check in a fresh process (imports done before measuring)."""
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            _CHILD,
            str(ROOT),
            str(Path(__file__).parent),
            str(path),
            "1" if parallel else "0",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rounds", type=int, default=5, help="runs per figure; medians are reported"
    )
    parser.add_argument(
        "--output", type=Path, default=Path(__file__).parent / "results" / "geometry.json"
    )
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    admesh = shutil.which("admesh")
    if admesh is None:
        print("admesh is not installed (apt-get install -y admesh)", file=sys.stderr)
        return 1
    load_before = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-geometry-") as temp:
        for name, path in make_files(Path(temp)):
            size = path.stat().st_size
            figures, result = compare_rounds(admesh, path, args.rounds)
            stages = stage_times(path, args.rounds)
            memory = peak_memory(path, parallel=True)
            walls = wall_thickness_time(path, args.rounds)
            rows.append(
                {
                    "mesh": name,
                    "triangles": result["triangles"],
                    "file_bytes": size,
                    **figures,
                    "stages_s": stages,
                    "peak_bytes": memory["tracemalloc_peak"],
                    "peak_over_file": memory["tracemalloc_peak"] / size,
                    "wall_thickness": walls,
                    "report": result,
                }
            )
    header = (
        f"{'mesh':<28} {'triangles':>10} {'admesh s':>9} {'dgml s':>7} {'1 thread':>8} "
        f"{'ratio':>6} {'goal':>5} {'ratio 1t':>8} {'peak/file':>9} {'goal':>5}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        ok_time = "OK" if row["ratio"] <= GOAL_RATIO else "SLOW"
        ok_memory = "OK" if row["peak_over_file"] <= GOAL_MEMORY else "OVER"
        print(
            f"{row['mesh']:<28} {row['triangles']:>10,} {row['admesh_s']:>9.3f} "
            f"{row['dgml_s']:>7.3f} {row['dgml_one_thread_s']:>8.3f} {row['ratio']:>6.2f} "
            f"{ok_time:>5} {row['ratio_one_thread']:>8.2f} {row['peak_over_file']:>8.2f}x "
            f"{ok_memory:>5}"
        )
    for row in rows:
        stages = ", ".join(f"{name} {seconds:.3f}" for name, seconds in row["stages_s"].items())
        print(f"stages (s, one thread), {row['mesh']}: {stages}")
    for row in rows:
        walls = row["wall_thickness"]
        print(
            f"wall thickness, {row['mesh']}: {walls['seconds']:.3f} s for {walls['rays']:,} rays "
            f"({walls['engine']}), thinnest wall {walls['min_wall_mm'] or 0:.2f} mm"
        )
    print(
        "\ntimes: medians of "
        f"{args.rounds} rounds; ratio = median over the rounds of dgml read + check wall time "
        "/ admesh wall time (ratio 1t: dgml in one thread); peak = tracemalloc peak of "
        "read + check in a fresh process.\n"
        f"load average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f}"
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        json.dumps(
            {
                "rounds": args.rounds,
                "goals": {"ratio": GOAL_RATIO, "peak_over_file": GOAL_MEMORY},
                "machine": {
                    "python": platform.python_version(),
                    "numpy": np.__version__,
                    "cpus": os.cpu_count(),
                    "load_average_before": load_before,
                    "load_average_after": os.getloadavg(),
                },
                "results": rows,
            },
            indent=2,
        )
    )
    print(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
