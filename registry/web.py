"""What the registry's route modules share: path templates, paging, and handing the outbox
over once a write has answered."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path as FastAPIPath
from fastapi import Query

from dgml import outbox
from dgml.deps import Services
from dgml.errors import Invalid
from registry.models import Version

DESIGN = "/designs/{owner}/{name}"
VERSION = DESIGN + "/versions/{ref}"
RequestId = Annotated[int, FastAPIPath(ge=1, le=2**31 - 1)]
Cursor = Annotated[str | None, Query(description="from the previous page's next_cursor")]


def page_size(services: Services, limit: int | None) -> int:
    if limit is None:
        return services.settings.page_size_default
    if limit < 1:
        raise Invalid("limit must be at least 1", field="limit")
    return min(limit, services.settings.page_size_max)


def stored_reader(services: Services, version: Version):
    """Reads a file of ``version`` by path from the blob store."""
    by_path = {f.path: f.sha256 for f in version.files}
    return lambda path: services.blobs.path_for(by_path[path]).read_bytes()


def send_outbox(services: Services) -> None:
    """After a write has answered: hand its outbox messages to their queues (a worker's sweep
    does it a few seconds later if Redis is away now)."""
    if services.redis is not None:
        outbox.dispatch(services.sessions, services.redis)
