"""``dgml scheduler`` and ``dgml reconciler``: housekeeping as processes of their own (compose's
scheduler and reconciler services) — they do their work against a real Redis and database, and
stop cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from redis import Redis

from dgml import outbox
from dgml.db import make_engine, make_sessionmaker, migrate, write_session
from dgml.worker import ALIVE_PREFIX, PERIODIC


def _env(tmp_path: Path, redis_url: str, database_url: str, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "DGML_DATA_DIR": str(tmp_path / "data"),
        "DGML_DATABASE_URL": database_url,
        "DGML_REDIS_URL": redis_url,
        "DGML_WORKER_TICK_S": "0.2",
        **extra,
    }


def _wait_for(predicate, what: str, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():  # a guard against a hang, not a measurement
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _stop(process: subprocess.Popen) -> tuple[int, str]:
    process.send_signal(signal.SIGTERM)
    try:
        _, err = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        _, err = process.communicate()
        raise AssertionError(f"did not stop on SIGTERM:\n{(err or '')[-2000:]}") from None
    return process.returncode, err or ""


def test_scheduler_enqueues_periodic_work_and_hands_over_the_outbox(
    tmp_path, redis_url, redis_client: Redis, database_url
):
    engine = make_engine(database_url)
    migrate(engine)
    sessions = make_sessionmaker(engine)
    from router import lifecycle  # registers the placement topic

    # A message whose request died before handing it over: the scheduler's sweep does it.
    with write_session(sessions) as session:
        outbox.post(session, lifecycle.PLACE_TOPIC, "place-999-1", {"line_id": 999, "attempt": 1})
    process = subprocess.Popen(
        [sys.executable, "-m", "dgml", "scheduler"],
        env=_env(tmp_path, redis_url, database_url),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        queue = outbox.queue(redis_client, "route")
        prefixes = {prefix for prefix, _, _ in PERIODIC}

        def periodic_enqueued() -> bool:
            ids = set(queue.job_ids)
            return all(any(i.startswith(p + "-") for i in ids) for p in prefixes)

        _wait_for(periodic_enqueued, "the periodic jobs on the route queue")
        _wait_for(lambda: "place-999-1" in queue.job_ids, "the outbox message handed over")
        with sessions() as session:
            rows = session.query(outbox.OutboxMessage).all()
            assert [row.sent_at is not None for row in rows] == [True]
        assert list(redis_client.scan_iter(ALIVE_PREFIX + "*"))
    finally:
        code, err = _stop(process)
        engine.dispose()
    assert code == 0, err[-2000:]
    assert "Traceback" not in err
    # Gone means gone: its liveness key is removed on the way out.
    assert not list(redis_client.scan_iter(ALIVE_PREFIX + "*"))


def test_reconciler_runs_its_rounds_and_stops_on_sigterm(
    tmp_path, redis_url, redis_client: Redis, database_url
):
    engine = make_engine(database_url)
    migrate(engine)
    engine.dispose()
    log_path = tmp_path / "reconciler.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "dgml", "reconciler", "--every", "0.2"],
            env=_env(tmp_path, redis_url, database_url, DGML_LOG_LEVEL="info"),
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    try:
        _wait_for(lambda: "reconciler started" in log_path.read_text(), "the reconciler to start")
        time.sleep(1.0)  # several rounds against an empty directory
        assert process.poll() is None, log_path.read_text()[-2000:]
    finally:
        code, _ = _stop(process)
    err = log_path.read_text()
    assert code == 0, err[-2000:]
    assert "reconciler stopped" in err
    assert "round failed" not in err and "Traceback" not in err


def test_scheduler_without_redis_is_a_clear_error(tmp_path, database_url):
    env = _env(tmp_path, "", database_url)
    env.pop("DGML_REDIS_URL")
    done = subprocess.run(
        [sys.executable, "-m", "dgml", "scheduler"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "DGML_REDIS_URL" in done.stderr
    assert "Traceback" not in done.stderr
