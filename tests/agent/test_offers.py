"""Which machine can make an offer, and the sentence sent with a decline when none can."""

from __future__ import annotations

import pytest

from dgml.errors import Invalid
from tests.agent.conftest import make_config
from workers.agent_offers import machines_for, part_extents, spec_for
from workers.tools import Tool, ToolReport

FOUND = ToolReport({"prusa-slicer": Tool("prusa-slicer", path="/usr/bin/prusa-slicer")})
MISSING = ToolReport({"prusa-slicer": Tool("prusa-slicer", problem="not found")})


def _names(answer):
    machines, reason = answer
    return [m.name for m in machines], reason


def test_a_machine_for_the_process_material_and_size(tmp_path):
    config = make_config(tmp_path, "http://127.0.0.1:8765")
    assert _names(machines_for(config, FOUND, "fdm", "pla")) == (["mk3"], None)
    assert _names(machines_for(config, FOUND, "fdm", "PETG", [200, 100, 240])) == (["mk3"], None)
    assert _names(machines_for(config, FOUND, "fdm", "pla", [300, 10, 10])) == (
        [],
        "the part (300 x 10 x 10 mm) fits no fdm machine here",
    )
    assert _names(machines_for(config, FOUND, "cnc", "oak")) == (
        [],
        "no machine here does cnc (this lab does fdm)",
    )
    assert _names(machines_for(config, MISSING, "fdm", "pla")) == (
        [],
        "fdm is not offered here: prusa-slicer: not found",
    )


@pytest.mark.parametrize(
    "extents", [None, [1, 2], ["a", 1, 1], [1, 1, float("nan")], [0, 1, 1], [True, 1, 1], "box"]
)
def test_extents_that_are_not_a_box_are_unknown(tmp_path, extents):
    assert part_extents(extents) is None
    config = make_config(tmp_path, "http://127.0.0.1:8765")
    assert _names(machines_for(config, FOUND, "fdm", "pla", extents)) == (["mk3"], None)


def test_a_job_is_journaled_only_with_files_on_the_hub(tmp_path):
    config = make_config(tmp_path, "http://127.0.0.1:8765")
    machine = config.machines[0]
    hub = "http://127.0.0.1:8765"
    job = {
        "id": 7,
        "offer_id": 3,
        "process": "fdm",
        "material": "pla",
        "files": [{"path": "a.stl", "url": "/api/v1/x/a.stl", "sha256": "a" * 64, "size": 5}],
    }

    def resolve(url: str) -> str:
        if url.startswith("http"):
            raise Invalid(f"the file URL {url} is not on the hub", field="url")
        return hub + url

    spec = spec_for(job, machine, resolve)
    assert (spec.job_id, spec.offer_id, spec.machine) == ("7", "3", "mk3")
    assert spec.files[0].url == hub + "/api/v1/x/a.stl"
    elsewhere = {**job, "files": [{**job["files"][0], "url": "https://elsewhere.example/a.stl"}]}
    with pytest.raises(Invalid, match="not on the hub"):
        spec_for(elsewhere, machine, resolve)
    with pytest.raises(Invalid, match="it names no files to make"):
        spec_for({**job, "files": []}, machine, resolve)
    with pytest.raises(Invalid, match="sha256"):
        spec_for({**job, "files": [{**job["files"][0], "sha256": "nope"}]}, machine, resolve)
