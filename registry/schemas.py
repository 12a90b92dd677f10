"""Pydantic schemas of the registry's HTTP interface: one per purpose, never ORM objects."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

DESIGN_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
TAG_RE = re.compile(r"^[a-z0-9][a-z0-9+#.-]{0,49}$")
VERSION_TAG_RE = re.compile(r"^[A-Za-z][A-Za-z0-9._-]{0,63}$")

Title = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Description = Annotated[str, StringConstraints(max_length=20_000)]
T = TypeVar("T")


def check_design_name(name: str) -> str:
    if not DESIGN_NAME_RE.match(name) or name.endswith(".") or ".." in name:
        raise ValueError(
            "a design name is 1 to 100 letters, digits, '.', '_' or '-', starting with a letter "
            "or digit"
        )
    return name


def normalise_tags(tags: list[str]) -> list[str]:
    seen: list[str] = []
    for raw in tags:
        tag = raw.strip().casefold()
        if not TAG_RE.match(tag):
            raise ValueError(f"tag {raw!r}: use 1 to 50 lower-case letters, digits or '-'")
        if tag not in seen:
            seen.append(tag)
    if len(seen) > 20:
        raise ValueError("at most 20 tags")
    return seen


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = None


class DesignRef(BaseModel):
    """A design at a version, as in ``owner/name@version``."""

    owner: str
    name: str
    version: int = Field(ge=1, le=2**31 - 1)


class UserPublic(BaseModel):
    name: str
    is_admin: bool = False
    created_at: datetime


class UserCreate(BaseModel):
    name: str
    admin: bool = False


class UserCreated(BaseModel):
    name: str
    is_admin: bool
    token: str = Field(description="shown once; only its hash is kept")


class TokenRevoked(BaseModel):
    """A token that no longer opens anything: its first characters, label and dates."""

    prefix: str
    label: str
    created_at: datetime
    revoked_at: datetime


class DesignCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    title: Title
    description: Description = ""
    license: str
    tags: list[str] = Field(default_factory=list)

    _name = field_validator("name")(check_design_name)
    _tags = field_validator("tags")(normalise_tags)


class DesignUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: Title | None = None
    description: Description | None = None
    tags: list[str] | None = None
    archived: bool | None = None

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else normalise_tags(value)


class DesignPublic(BaseModel):
    owner: str
    name: str
    full_name: str
    title: str
    description: str
    license: str
    tags: list[str]
    maintainers: list[str]
    archived: bool
    latest_version: int | None
    fork_count: int
    forked_from: DesignRef | None
    created_at: datetime
    updated_at: datetime


class DesignListed(DesignPublic):
    """A design as listings show it: with what its latest version is and can be made by."""

    # The latest version's geometry verdict (pending, none, pass, warn, fail, unreadable), or
    # None for a design without versions.
    verdict: str | None = None
    # The processes the latest version is made by: those its manifest declares, else those its
    # files suit (docs/registry.md, "What a design is made by").
    processes: list[str] = Field(default_factory=list)


class FileEntry(BaseModel):
    path: str
    sha256: str
    size: int
    media_type: str


class Contributor(BaseModel):
    name: str
    since: datetime


class VersionPublic(BaseModel):
    design: str
    number: int
    tag: str | None
    kind: str
    license: str
    message: str
    author: str
    created_at: datetime
    parents: list[DesignRef]
    files: list[FileEntry]
    manifest: dict[str, Any]
    # The geometry verdict of its model files: pending until every one has a report, then the
    # worst of theirs (pass, warn, fail, unreadable); none when it holds no model file.
    verdict: str = "pending"


class VersionSummary(BaseModel):
    design: str
    number: int
    tag: str | None
    kind: str
    message: str
    author: str
    created_at: datetime
    parents: list[DesignRef]
    file_count: int
    total_size: int
    verdict: str = "pending"


class Attribution(BaseModel):
    design: str
    version: int
    license: str
    licence_name: str
    contributors: list[Contributor]
    origins: list[DesignRef] = Field(description="the fork chain, nearest origin first")
    notice: str


class ForkCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    license: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        return None if value is None else check_design_name(value)


class LineageNode(BaseModel):
    owner: str
    name: str
    forked_from_version: int
    fork_count: int
    license: str
    descendants: list[LineageNode]


class Lineage(BaseModel):
    design: str
    ancestors: list[DesignRef] = Field(description="the design's origins, nearest first")
    descendants: list[LineageNode] = Field(description="the fork tree below the design")
    fork_count: int
    descendant_count: int


class ChangeRequestCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    source: DesignRef = Field(alias="from")
    title: Title
    message: Description = ""


class ChangeRequestDecision(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message: Description = ""


class ChangeRequestPublic(BaseModel):
    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    id: int
    design: str
    source: DesignRef = Field(alias="from")
    title: str
    message: str
    state: str
    author: str
    created_at: datetime
    decided_by: str | None
    decided_at: datetime | None
    decision_message: str
    merged_version: int | None


class EventPublic(BaseModel):
    id: int
    design: str
    kind: str
    actor: str
    created_at: datetime
    data: dict[str, Any]


class FileReport(BaseModel):
    path: str
    sha256: str
    # pending until its report is in, then pass | warn | fail | unreadable
    verdict: str
    report: dict[str, Any] | None = None
    # Where the previews are served, once they are made: {"png": url, "glb": url}.
    previews: dict[str, str] = {}


class VersionReport(BaseModel):
    design: str
    number: int
    verdict: str
    checker_version: str
    files: list[FileReport]


class FileChange(BaseModel):
    path: str
    old_sha256: str
    new_sha256: str
    # For model files: volume, area and size deltas and the two-sided surface distance, or
    # {"error": ...} when they cannot be compared.
    geometry: dict[str, Any] | None = None


class VersionDiff(BaseModel):
    design: str
    old: int
    new: int
    added: list[str]
    removed: list[str]
    changed: list[FileChange]
    unchanged: list[str]


class ParameterList(BaseModel):
    # The path of the CadQuery source, or None when the version is not parametric.
    source: str | None
    parameters: list[dict[str, Any]]


class BuildRequest(BaseModel):
    params: dict[str, Any] = {}


class BuiltFile(BaseModel):
    part: str
    path: str
    sha256: str
    size: int
    url: str


class BuildPublic(BaseModel):
    id: str
    design: str
    version: int
    # queued | running | done | failed
    state: str
    # pending until built and checked, then the worst verdict of its parts
    verdict: str
    parameters: dict[str, Any]
    files: list[BuiltFile]
    error: str | None = None
    limit: str | None = None
    log: str = ""
    seconds: float | None = None
    created_at: datetime
    finished_at: datetime | None = None
