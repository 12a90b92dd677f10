"""Configuration from the environment (prefix ``DGML_``).

Every setting has a default that makes the embedded stack work with nothing configured:
SQLite and blobs in a per-user data dir, and a Redis server that dgml starts itself there.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

import platformdirs
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("dgml", appauthor=False))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DGML_", extra="ignore")

    data_dir: Path = Field(default_factory=default_data_dir)
    # None means: SQLite file ``dgml.sqlite3`` in the data dir.
    database_url: str | None = None
    # None means: an embedded Redis server started in ``<data_dir>/redis`` with AOF on.
    redis_url: str | None = None
    # None means: ``<data_dir>/blobs``.
    blob_dir: Path | None = None
    # Cap on the body of one upload request (all files of a push together).
    max_upload_bytes: int = Field(default=512 * 1024 * 1024, gt=0)
    # Cap on any other request body (JSON): read before the routes see it.
    max_body_bytes: int = Field(default=1024 * 1024, gt=0)
    # Cap on the number of files in one push.
    max_files_per_version: int = Field(default=1000, gt=0)
    # Versions whose rendered metadata each API process keeps in memory (they never change).
    version_cache_size: int = Field(default=4096, ge=0)
    # Memory each API process may use to keep small files (up to 4 MiB each) it has served.
    file_cache_bytes: int = Field(default=64 * 1024 * 1024, ge=0)
    # Caps on checking one model file (and on one geometry diff), in a child process.
    validation_timeout_s: float = Field(default=300.0, gt=0)
    validation_memory_mb: int = Field(default=4096, ge=256)
    # Caps on one parametric build (a CadQuery script in the sandbox).
    build_timeout_s: float = Field(default=120.0, gt=0)
    build_memory_mb: int = Field(default=2048, ge=256)
    # RQ worker processes that ``dgml up`` starts (each serves validation and builds).
    validation_workers: int = Field(default=1, ge=0, le=64)
    # Routing: an agent is online while it called within this many seconds.
    agent_online_s: float = Field(default=90.0, gt=0)
    # An offer not accepted within this time expires and the line is routed elsewhere.
    offer_ttl_s: float = Field(default=300.0, gt=0)
    # A job's lease: lost when no heartbeat came for this long (the job is then disconnected).
    lease_ttl_s: float = Field(default=120.0, gt=0)
    # Failures reported by agents before a line is given up as unplaceable.
    max_failures: int = Field(default=3, ge=1)
    # The most parts one order may ask for.
    max_order_quantity: int = Field(default=10_000, ge=1)
    # Longest a claim call may wait for offers.
    claim_wait_max_s: float = Field(default=30.0, ge=0)
    # Score weights of placement, in km per unit (router.placement.Weights).
    route_km_per_km: float = Field(default=1.0, ge=0)
    route_km_per_wait_hour: float = Field(default=2.0, ge=0)
    route_km_per_eur: float = Field(default=0.5, ge=0)
    # The central factory that "km avoided" is measured against (Paris by default).
    central_lat: float = Field(default=48.8566, ge=-90, le=90)
    central_lon: float = Field(default=2.3522, ge=-180, le=180)
    # RQ worker processes that ``dgml up`` starts for routing alone (placements, sweeps).
    route_workers: int = Field(default=1, ge=1, le=64)
    # Each worker's housekeeping period: outbox hand-over, its liveness, due scheduled jobs.
    worker_tick_s: float = Field(default=5.0, gt=0)
    # How often the offer and lease sweeps and the reconciler run.
    sweeps_every_s: float = Field(default=5.0, gt=0)
    reconcile_every_s: float = Field(default=10.0, gt=0)
    # The reconciler leaves a line alone this long after its last change (its job is on its way).
    reconcile_grace_s: float = Field(default=30.0, ge=0)
    # A line waiting for its geometry report is looked at again after this delay, doubling up to
    # the maximum, and failed once it has waited route_report_wait_s.
    route_recheck_s: float = Field(default=2.0, gt=0)
    route_recheck_max_s: float = Field(default=60.0, gt=0)
    route_report_wait_s: float = Field(default=86_400.0, gt=0)
    host: str = "127.0.0.1"
    port: int = Field(default=8765, ge=0, le=65535)
    # Page size bounds for listings.
    page_size_default: int = Field(default=20, gt=0)
    page_size_max: int = Field(default=100, gt=0)
    # Log lines: one JSON object per line (for log pipelines) or plain text (for people).
    log_format: Literal["json", "text"] = "json"
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("log_format", "log_level", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("data_dir", "blob_dir", mode="after")
    @classmethod
    def _expand(cls, value: Path | None) -> Path | None:
        return value.expanduser().resolve() if value is not None else None

    @cached_property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'dgml.sqlite3'}"

    @cached_property
    def resolved_blob_dir(self) -> Path:
        return self.blob_dir or self.data_dir / "blobs"

    @property
    def redis_dir(self) -> Path:
        return self.data_dir / "redis"
