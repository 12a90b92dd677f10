"""The agent's machine side in a process of its own, for the restart tests to kill and run
again: ``python -m tests.workers.agent_child CONFIG MODE [SPEC]``.

- ``hang-after-start SPEC``: accept, download, prepare and start the job, print ``STARTED``,
  then wait forever, as an agent does while the machine works (the test kills it there);
- ``die-before-start SPEC``: download and prepare, journal the start, print ``RECORDED`` and
  kill itself with SIGKILL before the driver is called;
- ``resume``: resume every journaled job, poll them to the end, print their stages as JSON.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import httpx

from workers.config import load_config
from workers.journal import JobSpec
from workers.runner import Runner


def main(argv: list[str]) -> int:
    config = load_config(argv[1])
    mode = argv[2]
    with httpx.Client(timeout=30) as client:
        runner = Runner(config, client=client)
        if mode == "resume":
            return _resume(runner)
        spec = JobSpec.model_validate_json(Path(argv[3]).read_text())
        runner.accept(spec)
        if mode == "hang-after-start":
            record = runner.run_until_started(spec.job_id)
            print("STARTED", record.stage, flush=True)
            while True:
                time.sleep(1)
        runner.step(spec.job_id)  # download
        record = runner.step(spec.job_id)  # prepare
        folder = runner.artifacts_dir(spec.job_id)
        paths = [folder / a["name"] for a in record.artifacts or []]
        handle = runner.driver(record.machine).handle_for(spec.job_id, paths)
        runner.journal.record_start(spec.job_id, handle)
        print("RECORDED", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    return 1


def _resume(runner: Runner) -> int:
    jobs = [record.job_id for record in runner.resume_all()]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if all(runner.poll(job).finished for job in jobs):
            break
        time.sleep(0.05)
    print(json.dumps({job: runner.journal.get(job).stage for job in jobs}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
