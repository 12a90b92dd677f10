"""The journal: stages in order, idempotent transitions, the start written before the machine
is called, and a state dir that went missing."""

from __future__ import annotations

import logging
import shutil
import sqlite3

import pytest
from pydantic import ValidationError

from dgml.errors import Conflict, NotFound
from workers.journal import JobSpec, Journal

SHA = "a" * 64


def spec(job_id: str = "job-1", **changes) -> JobSpec:
    data = {
        "job_id": job_id,
        "offer_id": "offer-1",
        "machine": "m1",
        "process": "fdm",
        "material": "PLA",
        "files": [{"name": "part.stl", "url": "http://h/part", "sha256": SHA, "size": 3}],
    }
    data.update(changes)
    return JobSpec.model_validate(data)


def test_a_job_goes_through_its_stages(tmp_path):
    with Journal(tmp_path) as journal:
        record, new = journal.add(spec())
        assert (record.stage, new) == ("accepted", True)
        assert journal.advance("job-1", "downloaded")[1] is True
        record, moved = journal.advance(
            "job-1",
            "prepared",
            artifacts=[{"name": "p.gcode"}],
            outcome={"estimate": {"estimated_s": 60}},
        )
        assert moved and record.artifacts == [{"name": "p.gcode"}]
        record, new = journal.record_start("job-1", {"driver": "simulator", "job_id": "job-1"})
        assert (
            new
            and record.stage == "started"
            and record.handle
            == {
                "driver": "simulator",
                "job_id": "job-1",
            }
        )
        record, done = journal.finish("job-1", "done")
        assert done and record.stage == "done" and record.outcome is not None
        assert record.outcome["result"] == "done" and record.outcome["estimate"]
        assert journal.unreported() == [record]
        record, _ = journal.mark_reported("job-1")
        assert record.stage == "reported" and journal.unfinished() == []
        stages = [stage for stage, _ in journal.events("job-1")]
        assert stages == ["accepted", "downloaded", "prepared", "started", "done", "reported"]


def test_transitions_are_idempotent(tmp_path):
    with Journal(tmp_path) as journal:
        journal.add(spec())
        assert journal.add(spec())[1] is False
        journal.advance("job-1", "downloaded")
        assert journal.advance("job-1", "downloaded")[1] is False
        journal.advance("job-1", "prepared")
        assert journal.advance("job-1", "downloaded")[1] is False  # already past it
        _, new = journal.record_start("job-1", {"n": 1})
        again, new_again = journal.record_start("job-1", {"n": 2})
        assert new and not new_again and again.handle == {"n": 1}  # the first handle stays
        journal.finish("job-1", "failed", error="jammed")
        record, moved = journal.finish("job-1", "done")
        assert not moved and (record.stage, record.error) == ("failed", "jammed")
        journal.mark_reported("job-1")
        assert journal.mark_reported("job-1")[1] is False
        assert [s for s, _ in journal.events("job-1")].count("started") == 1


def test_skipping_stages_is_a_conflict(tmp_path):
    with Journal(tmp_path) as journal:
        journal.add(spec())
        with pytest.raises(Conflict):
            journal.advance("job-1", "prepared")
        with pytest.raises(Conflict):
            journal.record_start("job-1", {})
        with pytest.raises(Conflict):
            journal.finish("job-1", "done")
        with pytest.raises(Conflict):
            journal.mark_reported("job-1")
        assert journal.finish("job-1", "failed", error="hash mismatch")[0].stage == "failed"
        with pytest.raises(ValueError):
            journal.advance("job-1", "started")


def test_the_same_job_id_with_other_details_is_a_conflict(tmp_path):
    with Journal(tmp_path) as journal:
        journal.add(spec())
        with pytest.raises(Conflict):
            journal.add(spec(material="PETG"))
        with pytest.raises(NotFound):
            journal.get("job-2")


@pytest.mark.parametrize(
    "changes",
    [
        {"job_id": "../x"},
        {"job_id": ""},
        {"files": []},
        {"files": [{"name": "a", "url": "u", "sha256": "xyz", "size": 1}]},
        {"files": [{"name": "a", "url": "u", "sha256": SHA, "size": -1}]},
        {"unknown": 1},
    ],
)
def test_bad_job_specs_are_refused(changes):
    with pytest.raises(ValidationError):
        spec(**changes)


def test_the_journal_survives_reopening(tmp_path):
    with Journal(tmp_path) as journal:
        journal.add(spec())
        journal.advance("job-1", "downloaded")
    with Journal(tmp_path) as journal:
        assert journal.get("job-1").stage == "downloaded"
        assert [j.job_id for j in journal.unfinished()] == ["job-1"]
    with sqlite3.connect(tmp_path / "journal.sqlite3") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_deleted_state_dir_is_recreated_with_a_warning(tmp_path, caplog):
    state = tmp_path / "state"
    with Journal(state) as journal:
        journal.add(spec())
    shutil.rmtree(state)
    with caplog.at_level(logging.WARNING, logger="workers.journal"):
        journal = Journal(state)
    try:
        assert any("does not exist" in r.getMessage() for r in caplog.records)
        assert journal.jobs() == []
        journal.add(spec())  # works as on a first start
    finally:
        journal.close()
