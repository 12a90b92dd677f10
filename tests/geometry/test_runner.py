"""Checks run in a child process with caps on time and memory, and say when they hit one."""

from __future__ import annotations

from pathlib import Path

import pytest
import trimesh

from registry.geometry.runner import Limits, main, run_checks, run_diff

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture(scope="module")
def big_stl(tmp_path_factory) -> Path:
    """1.3 million triangles, 65 MB: more than the caps below allow."""
    path = tmp_path_factory.mktemp("big") / "sphere.stl"
    trimesh.creation.icosphere(subdivisions=8, radius=50).export(path)
    return path


def test_a_good_file_gets_its_report_and_previews():
    result = run_checks(DATA / "20mm-xyz-cube.stl", "cube.stl")
    assert result.report.verdict.value == "pass"
    assert result.report.metrics.volume_mm3 == pytest.approx(7938.68, 0.01)
    assert result.png and result.png.startswith(b"\x89PNG")
    assert result.glb and result.glb.startswith(b"glTF")


def test_an_unreadable_file_is_a_report_not_a_crash(tmp_path):
    fake = tmp_path / "logo.stl"
    fake.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    result = run_checks(fake, "logo.stl")
    assert result.report.verdict.value == "unreadable"
    assert result.png is None and result.glb is None


@pytest.mark.slow
def test_time_cap_is_reported(big_stl):
    result = run_checks(big_stl, "sphere.stl", Limits(seconds=1.0))
    (issue,) = result.report.issues
    assert issue.code.value == "LIMIT_EXCEEDED"
    assert issue.limit == "time"
    assert result.report.verdict.value == "fail"
    assert result.seconds < 5


@pytest.mark.slow
def test_memory_cap_is_reported(big_stl):
    result = run_checks(big_stl, "sphere.stl", Limits(seconds=120, memory_bytes=450 * 2**20))
    (issue,) = result.report.issues
    assert issue.code.value == "LIMIT_EXCEEDED", issue.message
    assert issue.limit == "memory"
    assert "450 MiB" in issue.message


def test_diff_in_a_child(tmp_path):
    old, new = tmp_path / "a.stl", tmp_path / "b.stl"
    trimesh.creation.box((10, 10, 10)).export(old)
    trimesh.creation.box((10, 10, 11)).export(new)
    diff = run_diff(old, "a.stl", new, "b.stl")
    assert diff["volume_delta_mm3"] == pytest.approx(100, abs=1e-6)
    bad = tmp_path / "bad.stl"
    bad.write_bytes(b"solid x\nfacet garbage\n")
    assert "error" in run_diff(old, "a.stl", bad, "bad.stl")


def test_child_usage_is_an_error(capsys):
    assert main(["nothing"]) == 2
    assert "usage" in capsys.readouterr().err
