"""Fixtures for the router: the real French fablabs (tests/data/fablabs-fr.json, see
tests/data/SOURCES.md) as directory records, and a geo index key of each test's own on the
session's Redis server."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from router.fablabs_io import record_from_listing
from router.records import Fablab

FABLABS_FR = Path(__file__).parent.parent / "data" / "fablabs-fr.json"


@pytest.fixture(scope="session")
def listings() -> list[dict]:
    return json.loads(FABLABS_FR.read_text())


@pytest.fixture(scope="session")
def french_labs(listings) -> list[Fablab]:
    """The 129 French fablabs with plausible machines, legal forms, queues and prices."""
    return [record_from_listing(listing) for listing in listings]


@pytest.fixture
def redis(redis_url) -> Iterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def geo_key(redis) -> Iterator[str]:
    """A key of this test's own; it and anything under it is deleted afterwards."""
    key = f"test:{uuid.uuid4().hex}:fablabs:geo"
    yield key
    leftovers = list(redis.scan_iter(match=f"{key}*"))
    if leftovers:
        redis.delete(*leftovers)
