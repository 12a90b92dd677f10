"""Readers: real files read like trimesh reads them, bad files refused with a reason."""

from __future__ import annotations

import importlib.util
import io
import struct
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import trimesh

from registry.geometry.mesh import MeshData, Unreadable
from registry.geometry.readers import (
    ReadLimits,
    read_3mf,
    read_model,
    read_obj,
    read_ply,
    read_stl,
    read_stl_ascii,
    read_stl_binary,
)

DATA = Path(__file__).resolve().parents[1] / "data"
SHARED_MESHES = Path(__file__).resolve().parents[3] / "shared" / "testdata" / "meshes"
BENCHY = SHARED_MESHES / "3DBenchy.3mf"

STL_AND_OBJ = sorted(
    p.name for p in DATA.iterdir() if p.suffix.lower() in (".stl", ".obj") and p.name != "empty.stl"
)

# What trimesh 4.x/5.x reads from the 3MF files (its 3MF loader needs networkx and lxml, which this
# project does not install): triangles, objects placed by the build, and bounds in mm.
TRIMESH_3MF = {
    "box.3mf": (12, 1, [[0, 0, 0], [10, 20, 30]]),
    "cube_gears.3mf": (25692, 17, [[2.61457, 2.61846, 2.2479], [170.61038, 127.72038, 35.8492]]),
    "featuretype.3MF": (2208, 1, [[-63.5, -31.75, 0], [63.5, 31.75, 34.925]]),  # 2.5 inch
    "heartgears.3mf": (
        30636,
        1,
        [[0.00118637, 0.00637054, 0.00279617], [79.5723, 47.6736, 76.435]],
    ),
    "pyramids.3mf": (3276, 9, [[5.0123, 5.0236, 10.025], [351.7377, 168.105, 35.025]]),
    "torus.3mf": (2200, 1, [[0, 0.00399911, 0.00999956], [24, 23.9566, 3.96929]]),
}


def trimesh_faces(path: Path) -> int:
    loaded = trimesh.load(path, process=False)
    if isinstance(loaded, trimesh.Scene):
        return sum(len(g.faces) for g in loaded.dump())
    return len(loaded.faces)


def area(mesh: MeshData) -> float:
    corners = mesh.triangles()
    cross = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    return float(np.linalg.norm(cross, axis=1).sum() / 2)


def binary_stl(triangles: np.ndarray, header: bytes = b"made in a test") -> bytes:
    records = np.zeros(len(triangles), dtype=[("n", "<f4", 3), ("v", "<f4", (3, 3)), ("a", "<u2")])
    records["v"] = triangles
    return header.ljust(80, b" ") + struct.pack("<I", len(triangles)) + records.tobytes()


TETRA = np.array(
    [
        [[0, 0, 0], [1, 0, 0], [0, 1, 0]],
        [[0, 0, 0], [0, 0, 1], [1, 0, 0]],
        [[0, 0, 0], [0, 1, 0], [0, 0, 1]],
        [[1, 0, 0], [0, 0, 1], [0, 1, 0]],
    ],
    dtype=np.float64,
)


# --- real files ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", STL_AND_OBJ)
def test_stl_and_obj_files_read_as_many_triangles_and_same_extent_as_trimesh(name):
    mesh = read_model(DATA / name, name)
    reference = trimesh.load(DATA / name, process=False)
    if isinstance(reference, trimesh.Scene):
        reference = trimesh.util.concatenate(reference.dump())
    assert mesh.triangle_count == len(reference.faces) == trimesh_faces(DATA / name)
    assert np.allclose(mesh.vertices.min(axis=0), reference.bounds[0])
    assert np.allclose(mesh.vertices.max(axis=0), reference.bounds[1])
    assert area(mesh) == pytest.approx(reference.area, rel=1e-6)
    assert mesh.object_of_face is not None and len(mesh.object_of_face) == mesh.triangle_count


@pytest.mark.parametrize("name", sorted(p.name for p in DATA.iterdir() if p.suffix == ".STL"))
def test_binary_stl_triangles_are_trimeshs_corner_for_corner(name):
    mesh = read_model(DATA / name, name)
    reference = trimesh.load(DATA / name, process=False)
    assert mesh.source_format == "stl-binary"
    assert np.allclose(mesh.triangles(), reference.triangles)


@pytest.mark.parametrize("name", sorted(TRIMESH_3MF))
def test_3mf_files_read_as_trimesh_reads_them(name):
    triangles, items, bounds = TRIMESH_3MF[name]
    mesh = read_model(DATA / name, name)
    assert mesh.source_format == "3mf"
    assert mesh.triangle_count == triangles
    assert len(mesh.objects) == items
    assert np.allclose(mesh.vertices.min(axis=0), bounds[0], atol=1e-4)
    assert np.allclose(mesh.vertices.max(axis=0), bounds[1], atol=1e-4)


@pytest.mark.skipif(
    not (importlib.util.find_spec("networkx") and importlib.util.find_spec("lxml")),
    reason="trimesh reads 3MF only with networkx and lxml installed",
)
@pytest.mark.parametrize("name", sorted(TRIMESH_3MF))
def test_3mf_triangle_counts_match_trimesh_when_it_can_read_3mf(name):
    assert read_model(DATA / name, name).triangle_count == trimesh_faces(DATA / name)


@pytest.mark.skipif(not BENCHY.exists(), reason="3DBenchy.3mf is in ../shared/testdata/meshes")
def test_3dbenchy_reads_with_its_225154_triangles():
    mesh = read_model(BENCHY, BENCHY.name)
    assert mesh.triangle_count == 225_154
    assert mesh.objects == ("3DBenchy",)
    assert np.allclose(mesh.vertices.max(axis=0) - mesh.vertices.min(axis=0), [60.001, 31.004, 48])


def test_multibody_ascii_stl_keeps_one_object_per_solid():
    mesh = read_model(DATA / "multibody.stl", "multibody.stl")
    assert mesh.source_format == "stl-ascii"
    assert mesh.objects == ("bodyB", "bodyA")
    assert np.bincount(mesh.object_of_face).tolist() == [12, 20]


def test_obj_with_two_objects_records_which_face_belongs_to_which():
    mesh = read_model(DATA / "two_objects.obj", "two_objects.obj")
    assert mesh.objects == ("cube", "tetra")
    assert np.bincount(mesh.object_of_face).tolist() == [12, 4]


def test_busted_stl_is_a_complete_binary_stl_and_is_read():
    # Its damage is in the header ("FileType: Binary") and zeroed normals, not in its size: the
    # count (3878) matches the file's 193,984 bytes, so it reads; the checks judge the mesh.
    mesh = read_model(DATA / "busted.STL", "busted.STL")
    assert mesh.source_format == "stl-binary"
    assert mesh.triangle_count == 3878
    assert np.isfinite(mesh.vertices).all()


def test_extension_is_matched_without_regard_to_case():
    data = (DATA / "unit_cube.STL").read_bytes()
    assert (
        read_model(data, "A.StL").triangle_count == read_model(data, "a.stl").triangle_count == 12
    )


# --- binary STL ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sphere_stl() -> tuple[np.ndarray, bytes]:
    triangles = trimesh.creation.icosphere(subdivisions=8).triangles
    return triangles, binary_stl(triangles)


def test_binary_stl_of_1_3_million_triangles_reads_corner_for_corner(sphere_stl):
    # How fast it reads is bench/bench_geometry.py's business, not a test's.
    triangles, data = sphere_stl
    mesh = read_model(data, "sphere.stl")
    assert mesh.triangle_count == 1_310_720
    assert np.allclose(mesh.triangles(), triangles, atol=1e-6)


def test_binary_stl_read_takes_little_more_than_the_file_size_in_memory(sphere_stl):
    _, data = sphere_stl
    tracemalloc.start()
    try:
        mesh = read_model(data, "sphere.stl")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # float32 corners as the file stores them (0.72x the file), int32 faces (0.24x)
    assert mesh.vertices.dtype == np.float32 and mesh.faces.dtype == np.int32
    assert peak < 1.1 * len(data)


def test_binary_stl_whose_header_starts_like_a_zip_is_still_read_by_its_size():
    assert read_model(binary_stl(TETRA, header=b"PK\x03\x04 odd"), "a.stl").triangle_count == 4


def test_binary_stl_whose_header_starts_with_solid_is_read_as_binary():
    data = binary_stl(TETRA, header=b"solid exported by a CAD program")
    mesh = read_stl(data)
    assert mesh.source_format == "stl-binary"
    assert np.allclose(mesh.triangles(), TETRA)


def test_truncated_binary_stl_is_unreadable_naming_count_and_size():
    data = (DATA / "unit_cube.STL").read_bytes()[:-60]
    with pytest.raises(Unreadable) as error:
        read_model(data, "unit_cube.stl")
    assert "12 triangles" in error.value.reason
    assert "684 bytes" in error.value.reason and f"{len(data)} bytes" in error.value.reason
    assert "\n" not in error.value.reason


def test_binary_stl_header_counting_more_triangles_than_the_file_holds_is_unreadable():
    data = bytearray(binary_stl(TETRA))
    data[80:84] = struct.pack("<I", 1000)
    with pytest.raises(Unreadable, match=r"1,000 triangles \(50,084 bytes\).*284 bytes"):
        read_stl_binary(bytes(data))


def test_binary_stl_with_a_short_count_and_more_records_is_unreadable():
    data = bytearray(binary_stl(TETRA))
    data[80:84] = struct.pack("<I", 2)
    with pytest.raises(Unreadable, match="counts 2 triangles"):
        read_stl(bytes(data))


def test_binary_stl_with_padding_shorter_than_a_record_is_read():
    assert read_stl(binary_stl(TETRA) + b"\x00" * 49).triangle_count == 4


def test_binary_stl_with_a_records_worth_of_trailing_bytes_is_unreadable():
    with pytest.raises(Unreadable, match=r"284 bytes.*334 bytes"):
        read_stl_binary(binary_stl(TETRA) + b"\x00" * 50)


def test_binary_stl_header_claiming_60_million_triangles_in_a_small_file_is_unreadable():
    data = b" " * 80 + struct.pack("<I", 60_000_000) + b"\x00" * 100
    with pytest.raises(Unreadable, match=r"60,000,000 triangles .*the file holds 184 bytes"):
        read_model(data, "huge.stl")


def test_binary_stl_with_more_triangles_than_the_limit_is_unreadable():
    with pytest.raises(Unreadable, match="4 triangles, more than the 3 a model may have"):
        read_model(binary_stl(TETRA), "big.stl", limits=ReadLimits(max_triangles=3))


def test_default_triangle_limit_is_50_million():
    assert ReadLimits().max_triangles == 50_000_000


def test_binary_stl_keeps_nan_and_inf_coordinates_for_the_checks():
    triangles = TETRA.copy()
    triangles[0, 0] = [np.nan, np.inf, -np.inf]
    mesh = read_model(binary_stl(triangles), "bad.stl")
    assert np.isnan(mesh.vertices[0, 0]) and np.isposinf(mesh.vertices[0, 1])
    assert mesh.triangle_count == 4


def test_binary_stl_with_no_triangles_is_unreadable():
    with pytest.raises(Unreadable, match="no triangles"):
        read_model(binary_stl(TETRA[:0]), "none.stl")


# --- ASCII STL -------------------------------------------------------------------------------


def ascii_stl(triangles: np.ndarray, name: str = "part") -> bytes:
    lines = [f"solid {name}"]
    for triangle in triangles:
        lines += ["  facet normal 0 0 0", "    outer loop"]
        lines += [f"      vertex {x!r} {y!r} {z!r}" for x, y, z in triangle.tolist()]
        lines += ["    endloop", "  endfacet"]
    lines.append(f"endsolid {name}")
    return "\n".join(lines).encode()


def test_ascii_stl_reads_the_same_triangles_trimesh_exports():
    sphere = trimesh.creation.icosphere(subdivisions=3)
    data = sphere.export(file_type="stl_ascii").encode()
    mesh = read_model(data, "sphere.stl")
    assert mesh.source_format == "stl-ascii"
    assert np.allclose(mesh.triangles(), sphere.triangles, atol=1e-5)


def test_ascii_stl_keeps_nan_coordinates():
    triangles = TETRA.copy()
    triangles[2, 1] = [np.nan, 0, np.inf]
    mesh = read_stl_ascii(ascii_stl(triangles))
    assert np.isnan(mesh.triangles()[2, 1, 0]) and np.isinf(mesh.triangles()[2, 1, 2])


def test_empty_stl_from_trimesh_is_unreadable_as_holding_no_facets():
    assert (DATA / "empty.stl").stat().st_size == 26
    with pytest.raises(Unreadable, match="no facets"):
        read_model(DATA / "empty.stl", "empty.stl")


def test_ascii_stl_with_garbage_between_facets_is_unreadable_naming_the_line():
    text = ascii_stl(TETRA).decode().splitlines()
    text.insert(8, "these are not the facets you are looking for")
    with pytest.raises(Unreadable, match="unexpected text at line 9"):
        read_model("\n".join(text).encode(), "garbage.stl")


def test_ascii_stl_with_garbage_after_endsolid_is_unreadable_naming_the_line():
    data = ascii_stl(TETRA) + b"\n\n# exported by hand\n"
    with pytest.raises(Unreadable, match="after 'endsolid' at line 32: '# exported by hand'"):
        read_model(data, "trailing.stl")


def test_ascii_stl_that_is_garbage_after_solid_is_unreadable():
    with pytest.raises(Unreadable, match="unexpected text at line 2"):
        read_model(b"solid x\n\x01\x02 lorem ipsum\nendsolid x\n", "garbage.stl")


@pytest.mark.parametrize("vertices", [2, 4])
def test_ascii_stl_facet_without_exactly_three_vertices_is_unreadable(vertices):
    facet = "facet normal 0 0 1\nouter loop\n" + "vertex 0 0 0\n" * vertices + "endloop\nendfacet\n"
    data = ascii_stl(TETRA).replace(b"endsolid", (facet + "endsolid").encode())
    with pytest.raises(Unreadable, match="facet at line 30 is malformed"):
        read_model(data, "bad.stl")


def test_ascii_stl_with_a_word_for_a_coordinate_is_unreadable():
    data = ascii_stl(TETRA).replace(b"vertex 1.0 0.0 0.0", b"vertex one 0.0 0.0", 1)
    with pytest.raises(Unreadable, match="not a number: 'one'"):
        read_model(data, "bad.stl")


# --- what is not a model at all --------------------------------------------------------------

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(range(256)) * 4


def test_png_renamed_stl_is_unreadable_as_a_png():
    with pytest.raises(Unreadable, match="PNG image"):
        read_model(PNG, "photo.stl")


def test_png_renamed_stl_is_refused_by_the_binary_reader_too():
    with pytest.raises(Unreadable, match=f"header counts .* holds {len(PNG):,} bytes"):
        read_stl(PNG)


@pytest.mark.parametrize("name", ["a.stl", "a.3mf", "a.obj", "a.ply"])
def test_empty_file_is_unreadable_for_every_format(name):
    with pytest.raises(Unreadable, match=r"empty \(0 bytes\)"):
        read_model(b"", name)


def test_unknown_extension_is_unreadable_listing_the_known_ones():
    known = r"\.3mf, \.obj, \.ply, \.step, \.stl, \.stp"
    with pytest.raises(Unreadable, match=r"cannot read \.dwg.*" + known):
        read_model(b"AC1032", "drawing.dwg")


def test_missing_file_is_unreadable_not_an_oserror(tmp_path):
    with pytest.raises(Unreadable, match="cannot open"):
        read_model(tmp_path / "gone.stl", "gone.stl")


# --- OBJ -------------------------------------------------------------------------------------

SQUARE_OBJ = b"""# a square in two forms
v 0 0 0
v 1 0 0
v 1 1 0
v 0 1 0
vt 0 0
vn 0 0 1
o positive
f 1/1/1 2/1/1 3/1/1 4/1/1
o negative
f -4//1 -3//1 -2//1 -1//1
"""


def test_obj_quads_become_fans_and_negative_indices_count_back_from_the_last_vertex():
    mesh = read_obj(SQUARE_OBJ)
    assert mesh.faces.tolist() == [[0, 1, 2], [0, 2, 3], [0, 1, 2], [0, 2, 3]]
    assert mesh.objects == ("positive", "negative")
    assert mesh.object_of_face.tolist() == [0, 0, 1, 1]


def test_obj_negative_indices_are_relative_to_the_vertices_defined_so_far():
    data = b"v 0 0 0\nv 1 0 0\nv 0 1 0\nf -3 -2 -1\nv 5 5 5\nv 6 5 5\nv 5 6 5\nf -3 -2 -1\n"
    assert read_obj(data).faces.tolist() == [[0, 1, 2], [3, 4, 5]]


def test_obj_pentagon_becomes_three_triangles_sharing_its_first_corner():
    data = b"v 0 0 0\nv 1 0 0\nv 2 1 0\nv 1 2 0\nv 0 1 0\nf 1 2 3 4 5\n"
    assert read_obj(data).faces.tolist() == [[0, 1, 2], [0, 2, 3], [0, 3, 4]]


def test_obj_with_continued_face_lines_reads_the_whole_polygon():
    data = b"v 0 0 0\r\nv 1 0 0\r\nv 1 1 0\r\nv 0 1 0\r\nf 1 2 \\\r\n 3 4\r\n"
    assert read_obj(data).triangle_count == 2


@pytest.mark.parametrize(
    ("face", "message"),
    [
        (b"f 1 2 9", "refers to vertex 9 but the file defines 4 vertices"),
        (b"f 1 2 0", "vertex index 0 is out of range"),
        (b"f -1 -2 -5", "vertex index -5 is out of range"),
        (b"f 1 2", "at least three vertices"),
        (b"f 1 two 3", "'two' is not a vertex index"),
    ],
)
def test_obj_face_with_bad_indices_is_unreadable(face, message):
    data = b"v 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\n" + face + b"\n"
    with pytest.raises(Unreadable, match=message):
        read_model(data, "bad.obj")


def test_obj_without_faces_is_unreadable():
    with pytest.raises(Unreadable, match="no faces"):
        read_model(b"v 0 0 0\nv 1 0 0\n", "points.obj")


def test_obj_keeps_nan_vertices():
    mesh = read_obj(b"v nan 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    assert np.isnan(mesh.vertices[0, 0])


# --- PLY -------------------------------------------------------------------------------------

BOX = trimesh.creation.box((10, 20, 30))


@pytest.mark.parametrize("encoding", ["binary", "ascii"])
def test_ply_in_either_encoding_reads_the_box_it_was_written_from(encoding):
    mesh = read_model(BOX.export(file_type="ply", encoding=encoding), "box.ply")
    assert mesh.source_format == "ply"
    assert np.allclose(mesh.triangles(), BOX.triangles)


@pytest.mark.parametrize("encoding", ["binary", "ascii"])
def test_truncated_ply_is_unreadable(encoding):
    data = BOX.export(file_type="ply", encoding=encoding)
    with pytest.raises(Unreadable):
        read_ply(data[:-40])


def test_ply_header_declaring_absurdly_many_faces_is_unreadable():
    data = BOX.export(file_type="ply").replace(b"element face 12", b"element face 900000000")
    with pytest.raises(Unreadable, match="900,000,000 triangles"):
        read_ply(data)


def test_text_that_is_not_ply_is_unreadable():
    with pytest.raises(Unreadable, match="does not start with 'ply'"):
        read_model(b"solid x\nendsolid x\n", "x.ply")


# --- 3MF: units, transforms, components ------------------------------------------------------

CORE = "http://schemas.microsoft.com/3dmanufacturing/core/2015/02"
RELS = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    '<Relationship Target="/{target}" Id="rel0" '
    'Type="http://schemas.microsoft.com/3dmanufacturing/2013/01/3dmodel"/></Relationships>'
)
TETRA_MESH = """<mesh><vertices>
<vertex x="0" y="0" z="0"/><vertex x="1" y="0" z="0"/>
<vertex x="0" y="1" z="0"/><vertex x="0" y="0" z="1"/>
</vertices><triangles>
<triangle v1="0" v2="2" v3="1"/><triangle v1="0" v2="1" v3="3"/>
<triangle v1="0" v2="3" v3="2"/><triangle v1="1" v2="2" v3="3"/>
</triangles></mesh>"""


def model_xml(resources: str, build: str, unit: str | None = "millimeter") -> str:
    unit_attribute = f' unit="{unit}"' if unit else ""
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><model{unit_attribute} xmlns="{CORE}">'
        f"<resources>{resources}</resources><build>{build}</build></model>"
    )


def make_3mf(model: str, path: str = "3D/3dmodel.model", extra: dict | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("_rels/.rels", RELS.format(target=path))
        archive.writestr(path, model)
        for name, text in (extra or {}).items():
            archive.writestr(name, text)
    return buffer.getvalue()


def tetra_3mf(unit: str | None = "millimeter", transform: str | None = None) -> bytes:
    placed = f' transform="{transform}"' if transform else ""
    resources = f'<object id="1" name="tetra" type="model">{TETRA_MESH}</object>'
    return make_3mf(model_xml(resources, f'<item objectid="1"{placed}/>', unit))


@pytest.mark.parametrize(
    ("unit", "factor"),
    [
        ("micron", 0.001),
        ("millimeter", 1),
        ("centimeter", 10),
        ("inch", 25.4),
        ("foot", 304.8),
        ("meter", 1000),
    ],
)
def test_3mf_vertices_are_converted_to_mm_from_the_declared_unit(unit, factor):
    mesh = read_model(tetra_3mf(unit), "tetra.3mf")
    assert mesh.unit == unit
    assert np.allclose(mesh.vertices.max(axis=0), [factor] * 3)


def test_3mf_in_inches_is_25_4_times_larger_in_mm():
    mesh = read_3mf(tetra_3mf("inch"))
    assert np.allclose(mesh.triangles()[3], [[25.4, 0, 0], [0, 25.4, 0], [0, 0, 25.4]])


def test_3mf_without_a_unit_is_in_millimetres():
    mesh = read_3mf(tetra_3mf(None))
    assert mesh.unit == "mm" and np.allclose(mesh.vertices.max(axis=0), [1, 1, 1])


def test_3mf_with_an_unknown_unit_is_unreadable():
    with pytest.raises(Unreadable, match="unit 'furlong'"):
        read_3mf(tetra_3mf("furlong"))


def test_3mf_build_item_transform_rotates_and_moves_the_object():
    # 3MF multiplies the row vector [x y z 1] by the 4x3 matrix: a quarter turn about z, then
    # a move by (10, 20, 30).
    mesh = read_3mf(tetra_3mf(transform="0 1 0 -1 0 0 0 0 1 10 20 30"))
    assert np.allclose(mesh.vertices, [[10, 20, 30], [10, 21, 30], [9, 20, 30], [10, 20, 31]])


def test_3mf_components_place_other_objects_and_compose_with_the_item_transform():
    resources = (
        f'<object id="1" name="tetra" type="model">{TETRA_MESH}</object>'
        '<object id="2" name="pair" type="model"><components>'
        '<component objectid="1"/>'
        '<component objectid="1" transform="2 0 0 0 2 0 0 0 2 5 0 0"/>'
        "</components></object>"
    )
    build = '<item objectid="2" transform="1 0 0 0 1 0 0 0 1 0 0 100"/><item objectid="1"/>'
    mesh = read_3mf(make_3mf(model_xml(resources, build)))
    assert mesh.triangle_count == 12
    assert mesh.objects == ("pair", "tetra")
    assert mesh.object_of_face.tolist() == [0] * 8 + [1] * 4
    first, scaled, alone = mesh.triangles().reshape(3, 4, 3, 3)
    assert np.allclose(first, TETRA_XYZ[TETRA_FACES] + [0, 0, 100])
    assert np.allclose(scaled, TETRA_XYZ[TETRA_FACES] * 2 + [5, 0, 100])
    assert np.allclose(alone, TETRA_XYZ[TETRA_FACES])


TETRA_XYZ = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=float)
TETRA_FACES = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])


def test_3mf_model_part_named_by_the_relationships_is_the_one_read():
    resources = f'<object id="7" name="elsewhere" type="model">{TETRA_MESH}</object>'
    data = make_3mf(model_xml(resources, '<item objectid="7"/>'), path="3D/other.model")
    assert read_3mf(data).objects == ("elsewhere",)


def test_3mf_item_referring_to_a_missing_object_is_unreadable():
    resources = f'<object id="1" type="model">{TETRA_MESH}</object>'
    with pytest.raises(Unreadable, match="object 9"):
        read_3mf(make_3mf(model_xml(resources, '<item objectid="9"/>')))


def test_3mf_components_that_refer_to_themselves_are_unreadable():
    resources = '<object id="1" type="model"><components><component objectid="1"/></components>'
    resources += "</object>"
    with pytest.raises(Unreadable, match="nest too deep"):
        read_3mf(make_3mf(model_xml(resources, '<item objectid="1"/>')))


def test_3mf_components_nesting_into_billions_of_placements_are_refused():
    # Each object places the next one twice: 2**30 copies of a tetrahedron from a tiny file.
    resources = f'<object id="0" type="model">{TETRA_MESH}</object>'
    for level in range(1, 31):
        resources += f'<object id="{level}" type="model"><components>'
        resources += f'<component objectid="{level - 1}"/>' * 2 + "</components></object>"
    with pytest.raises(Unreadable, match="places objects more than 100,000 times"):
        read_3mf(make_3mf(model_xml(resources, '<item objectid="30"/>')))


def test_3mf_build_items_placing_one_object_twice_get_distinct_names():
    resources = f'<object id="1" name="peg" type="model">{TETRA_MESH}</object>'
    build = '<item objectid="1"/><item objectid="1" transform="1 0 0 0 1 0 0 0 1 5 0 0"/>'
    mesh = read_3mf(make_3mf(model_xml(resources, build)))
    assert mesh.objects == ("peg", "peg (2)")
    assert mesh.triangle_count == 8


def test_3mf_triangle_index_outside_the_vertices_is_unreadable():
    mesh = TETRA_MESH.replace('v1="1" v2="2" v3="3"', 'v1="1" v2="2" v3="4"')
    resources = f'<object id="1" type="model">{mesh}</object>'
    with pytest.raises(Unreadable, match="outside its 4 vertices"):
        read_3mf(make_3mf(model_xml(resources, '<item objectid="1"/>')))


def test_3mf_with_an_empty_build_is_unreadable():
    resources = f'<object id="1" type="model">{TETRA_MESH}</object>'
    with pytest.raises(Unreadable, match="no items"):
        read_3mf(make_3mf(model_xml(resources, "")))


def test_3mf_keeps_nan_vertices():
    mesh_xml = TETRA_MESH.replace('<vertex x="1" y="0"', '<vertex x="NaN" y="0"')
    resources = f'<object id="1" type="model">{mesh_xml}</object>'
    mesh = read_3mf(make_3mf(model_xml(resources, '<item objectid="1"/>')))
    assert np.isnan(mesh.vertices[1, 0])


def test_3mf_that_is_not_a_zip_is_unreadable():
    with pytest.raises(Unreadable, match="not a zip archive"):
        read_model(b"<model/>" * 10, "model.3mf")


def test_3mf_with_a_dtd_declaring_entities_is_unreadable():
    laughs = (
        '<?xml version="1.0"?><!DOCTYPE model [<!ENTITY a "aaaaaaaaaa">'
        '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>'
    )
    model = model_xml("", '<item objectid="1"/>').replace(
        '<?xml version="1.0" encoding="UTF-8"?>', laughs
    )
    model = model.replace("<resources>", "<resources>&b;")
    with pytest.raises(Unreadable, match="DTD or entities"):
        read_3mf(make_3mf(model))


def test_3mf_with_broken_xml_is_unreadable():
    with pytest.raises(Unreadable, match="not valid XML"):
        read_3mf(make_3mf("<model><resources></model>"))


# --- 3MF: hostile archives -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ("../../etc/cron.d/evil", "'..' segment"),
        ("3D/../../evil.model", "'..' segment"),
        ("/etc/passwd", "absolute path"),
        ("C:/Windows/evil.model", "absolute path"),
        ("3D\\..\\evil.model", "backslash"),
    ],
)
def test_3mf_entry_with_a_path_escaping_the_archive_is_unreadable(entry, problem):
    data = make_3mf(model_xml("", ""), extra={entry: "x"})
    with pytest.raises(Unreadable) as error:
        read_3mf(data)
    assert problem in error.value.reason and repr(entry) in error.value.reason


def test_3mf_with_more_than_10000_entries_is_unreadable():
    data = make_3mf(model_xml("", ""), extra={f"Metadata/{i}.txt": "" for i in range(10_000)})
    with pytest.raises(Unreadable, match="10,003 entries, more than the 10,000"):
        read_3mf(data)


def deflated_bomb(size: int, prefix: bytes, block: int = 1 << 20) -> bytes:
    """A raw deflate stream of ``prefix`` then spaces, ``size`` bytes in all, made in
    milliseconds: after a full flush the compressor starts afresh, so every block of spaces
    compresses to the same bytes and the stream is those bytes repeated."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = compressor.compress(prefix) + compressor.flush(zlib.Z_FULL_FLUSH)
    blocks, rest = divmod(size - len(prefix), block)
    body = compressor.compress(b" " * block) + compressor.flush(zlib.Z_FULL_FLUSH)
    tail = compressor.compress(b" " * rest) + compressor.flush()
    return head + body * blocks + tail


def zip_with_one_deflated_entry(name: str, stream: bytes, declared_size: int) -> bytes:
    """A zip archive holding ``stream`` as ``name``, declaring ``declared_size`` inflated
    bytes (CRC left at 0: what is under test must refuse the entry before its CRC matters)."""
    encoded = name.encode()
    fields = (8, 0, 0, 0, len(stream), declared_size, len(encoded))
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, *fields, 0) + encoded
    central = struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, *fields, 0, 0, 0, 0, 0, 0)
    central += encoded
    end = struct.pack(
        "<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(central), len(local) + len(stream), 0
    )
    return local + stream + central + end


BOMB_PREFIX = model_xml("", "").split("<resources>")[0].encode() + b"<resources>"
BOMB_SIZE = 2 << 30  # 2 GiB of XML


@pytest.fixture(scope="module")
def bomb_stream() -> bytes:
    return deflated_bomb(BOMB_SIZE, BOMB_PREFIX)


def test_bomb_stream_really_inflates_to_its_full_size(bomb_stream):
    # Inflating 2 GiB takes seconds, so the test checks the first block and the repeated parts.
    inflater = zlib.decompressobj(-15)
    first = inflater.decompress(bomb_stream[:200_000], 64 << 20)
    assert first.startswith(BOMB_PREFIX) and first[len(BOMB_PREFIX) :].strip() == b""
    assert len(bomb_stream) < BOMB_SIZE // 1000


def test_3mf_zip_bomb_is_refused_from_its_directory_in_bounded_memory(bomb_stream):
    data = zip_with_one_deflated_entry("3D/3dmodel.model", bomb_stream, BOMB_SIZE)
    assert len(data) < 3 << 20
    tracemalloc.start()
    try:
        with pytest.raises(Unreadable) as error:
            read_model(data, "bomb.3mf")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "zip bomb" in error.value.reason and f"{BOMB_SIZE:,}" in error.value.reason
    assert peak < 16 << 20


def test_3mf_zip_bomb_whose_header_lies_about_its_size_is_refused_in_bounded_memory(bomb_stream):
    # Declares 1 MiB (within every cap) but inflates to 2 GiB: reading stops at what it declared.
    data = zip_with_one_deflated_entry("3D/3dmodel.model", bomb_stream, 1 << 20)
    tracemalloc.start()
    try:
        with pytest.raises(Unreadable, match=r"3dmodel\.model"):
            read_model(data, "liar.3mf")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 32 << 20


def test_3mf_whose_declared_size_passes_the_cap_but_not_the_ratio_is_unreadable():
    # 100 KiB of spaces deflate to about 100 bytes: far past 200 times the archive.
    stream = deflated_bomb(100 << 10, BOMB_PREFIX)
    data = zip_with_one_deflated_entry("3D/3dmodel.model", stream, 100 << 10)
    with pytest.raises(Unreadable, match="200 times the archive"):
        read_3mf(data)


def test_binary_stl_from_disk_streams_to_the_same_mesh(tmp_path):
    data = (DATA / "20mm-xyz-cube.stl").read_bytes()
    path = tmp_path / "cube.stl"
    path.write_bytes(data)
    from_disk, in_memory = read_model(path, "cube.stl"), read_model(data, "cube.stl")
    assert np.array_equal(from_disk.vertices, in_memory.vertices)
    assert np.array_equal(from_disk.faces, in_memory.faces)
    assert from_disk.source_format == "stl-binary"
    # A file one triangle short is not read as binary by its size, and says so.
    path.write_bytes(data[:-50])
    with pytest.raises(Unreadable, match="header counts 260 triangles"):
        read_model(path, "cube.stl")


def test_binary_stl_from_disk_holds_no_copy_of_the_file(tmp_path):
    path = tmp_path / "sphere.stl"
    trimesh.creation.icosphere(subdivisions=7).export(path)  # 16 MB
    size = path.stat().st_size
    tracemalloc.start()
    mesh = read_model(path, "sphere.stl")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    held = mesh.vertices.nbytes + mesh.faces.nbytes + mesh.object_of_face.nbytes
    assert peak < held + size * 0.3  # the vertices and faces, and a few MB of reading
