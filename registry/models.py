"""SQLAlchemy models of the registry. The database is the system of record."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from dgml.db import Base, UTCDateTime, utcnow


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(40))
    # Names are unique without regard to case; the folded form carries the constraint.
    name_folded: Mapped[str] = mapped_column(String(40), unique=True)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    # sha256 of the token; the token itself is shown once and never stored.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # The first characters of the token, so a person can tell their tokens apart.
    prefix: Mapped[str] = mapped_column(String(16))
    label: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    user: Mapped[User] = relationship(lazy="joined")


class Design(Base):
    __tablename__ = "designs"
    __table_args__ = (UniqueConstraint("owner_id", "name_folded"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    name_folded: Mapped[str] = mapped_column(String(100))
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    license: Mapped[str] = mapped_column(String(64), index=True)
    archived: Mapped[bool] = mapped_column(Boolean, default=False)
    # Number of the newest version (0 before the first push). Pushes take the next number by an
    # atomic increment of this column, so concurrent pushes never get the same number.
    version_count: Mapped[int] = mapped_column(Integer, default=0)
    fork_count: Mapped[int] = mapped_column(Integer, default=0)
    forked_from_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("versions.id", use_alter=True), nullable=True, index=True
    )
    # Case-folded name, title, description and tags, for text search on every backend alike.
    search_text: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    owner: Mapped[User] = relationship(lazy="joined", foreign_keys=[owner_id])
    tags: Mapped[list[DesignTag]] = relationship(
        cascade="all, delete-orphan", lazy="selectin", order_by="DesignTag.tag"
    )
    maintainers: Mapped[list[DesignMaintainer]] = relationship(
        cascade="all, delete-orphan", lazy="selectin"
    )
    forked_from: Mapped[Version | None] = relationship(
        foreign_keys=[forked_from_version_id], lazy="joined"
    )


class DesignTag(Base):
    __tablename__ = "design_tags"

    design_id: Mapped[int] = mapped_column(
        ForeignKey("designs.id", ondelete="CASCADE"), primary_key=True
    )
    tag: Mapped[str] = mapped_column(String(50), primary_key=True, index=True)


class DesignMaintainer(Base):
    __tablename__ = "design_maintainers"

    design_id: Mapped[int] = mapped_column(
        ForeignKey("designs.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True)
    added_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    user: Mapped[User] = relationship(lazy="joined")


class Version(Base):
    __tablename__ = "versions"
    __table_args__ = (
        UniqueConstraint("design_id", "number"),
        UniqueConstraint("design_id", "tag"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    design_id: Mapped[int] = mapped_column(ForeignKey("designs.id"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    tag: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # ``push`` for an ordinary version, ``fork`` for the first version of a fork (a copy of its
    # origin), ``merge`` for a version made by accepting a change request.
    kind: Mapped[str] = mapped_column(String(16), default="push")
    license: Mapped[str] = mapped_column(String(64))
    manifest: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    message: Mapped[str] = mapped_column(Text, default="")
    author_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Everyone credited for this version: its author and the contributors of all its ancestors,
    # across forks and merges, as ``[{"name": ..., "since": iso time}]`` in order of first
    # contribution. A version never changes, so neither does this; it is computed once when the
    # version is written, from the parents' lists.
    contributors: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)

    design: Mapped[Design] = relationship(foreign_keys=[design_id], lazy="joined")
    author: Mapped[User] = relationship(lazy="joined")
    files: Mapped[list[VersionFile]] = relationship(
        cascade="all, delete-orphan", lazy="selectin", order_by="VersionFile.path"
    )
    parent_links: Mapped[list[VersionParent]] = relationship(
        cascade="all, delete-orphan",
        lazy="selectin",
        foreign_keys="VersionParent.version_id",
        order_by="VersionParent.position",
    )


class VersionParent(Base):
    __tablename__ = "version_parents"

    version_id: Mapped[int] = mapped_column(
        ForeignKey("versions.id", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    parent_id: Mapped[int] = mapped_column(ForeignKey("versions.id"), index=True)

    parent: Mapped[Version] = relationship(foreign_keys=[parent_id], lazy="joined")


class VersionFile(Base):
    __tablename__ = "version_files"

    version_id: Mapped[int] = mapped_column(
        ForeignKey("versions.id", ondelete="CASCADE"), primary_key=True
    )
    path: Mapped[str] = mapped_column(String(512), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size: Mapped[int] = mapped_column(BigInteger)
    media_type: Mapped[str] = mapped_column(String(100))


class ChangeRequest(Base):
    __tablename__ = "change_requests"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    design_id: Mapped[int] = mapped_column(ForeignKey("designs.id"), index=True)
    source_version_id: Mapped[int] = mapped_column(ForeignKey("versions.id"))
    author_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    title: Mapped[str] = mapped_column(String(200))
    message: Mapped[str] = mapped_column(Text, default="")
    # open | accepted | declined
    state: Mapped[str] = mapped_column(String(16), default="open")
    decided_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    decision_message: Mapped[str] = mapped_column(Text, default="")
    merged_version_id: Mapped[int | None] = mapped_column(ForeignKey("versions.id"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    design: Mapped[Design] = relationship(lazy="joined")
    source_version: Mapped[Version] = relationship(foreign_keys=[source_version_id], lazy="joined")
    author: Mapped[User] = relationship(foreign_keys=[author_id], lazy="joined")
    decided_by: Mapped[User | None] = relationship(foreign_keys=[decided_by_id], lazy="joined")
    merged_version: Mapped[Version | None] = relationship(
        foreign_keys=[merged_version_id], lazy="joined"
    )


class DesignEvent(Base):
    """One line of a design's public activity log."""

    __tablename__ = "design_events"
    __table_args__ = (Index("ix_design_events_design_id_id", "design_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    design_id: Mapped[int] = mapped_column(ForeignKey("designs.id"))
    # design.created | design.updated | version.created | fork.created | design.forked |
    # change_request.opened | change_request.accepted | change_request.declined |
    # maintainer.added | maintainer.removed
    kind: Mapped[str] = mapped_column(String(40))
    actor_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    actor: Mapped[User] = relationship(lazy="joined")


class GeometryReportRow(Base):
    """The geometry report of one file's bytes, read as one format by one checker version.

    Bytes never change, so neither does their report: a row is written once, and every version
    that holds the same file (pushes, forks, merges) shares it. A new checker version simply
    has no rows yet, and its reports are made afresh.
    """

    __tablename__ = "geometry_reports"
    __table_args__ = (UniqueConstraint("sha256", "reader", "checker_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64))
    # The reader the file's extension chose (stl, obj, ply, 3mf, step): the same bytes under
    # another extension are another question.
    reader: Mapped[str] = mapped_column(String(8))
    checker_version: Mapped[str] = mapped_column(String(32))
    # pass | warn | fail | unreadable
    verdict: Mapped[str] = mapped_column(String(16))
    report: Mapped[dict[str, Any]] = mapped_column(JSON)
    # Blobs of the previews made in the same run (a GLB for viewers, a PNG thumbnail).
    preview_png: Mapped[str | None] = mapped_column(String(64), nullable=True)
    preview_glb: Mapped[str | None] = mapped_column(String(64), nullable=True)
    seconds: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class GeometryDiffRow(Base):
    """The geometry diff of two files' bytes, kept like reports: computed once, shared by all."""

    __tablename__ = "geometry_diffs"
    __table_args__ = (
        UniqueConstraint(
            "old_sha256",
            "old_reader",
            "new_sha256",
            "new_reader",
            "checker_version",
            name="uq_geometry_diffs_pair",
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    old_sha256: Mapped[str] = mapped_column(String(64))
    old_reader: Mapped[str] = mapped_column(String(8))
    new_sha256: Mapped[str] = mapped_column(String(64))
    new_reader: Mapped[str] = mapped_column(String(8))
    checker_version: Mapped[str] = mapped_column(String(32))
    diff: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Build(Base):
    """One build of a version's parametric source with one set of parameter values.

    Builds are keyed by the version and the hash of the complete, canonical parameter set, so
    the same request twice builds once. The built files are blobs like any version file.
    """

    __tablename__ = "builds"
    __table_args__ = (UniqueConstraint("version_id", "parameter_hash"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("versions.id"), index=True)
    parameter_hash: Mapped[str] = mapped_column(String(64))
    parameters: Mapped[dict[str, Any]] = mapped_column(JSON)
    # queued | running | done | failed
    state: Mapped[str] = mapped_column(String(16), default="queued")
    # [{"part", "path", "sha256", "size"}] once done
    files: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    # Which cap the build hit (time, memory, output...), if any.
    limit_hit: Mapped[str | None] = mapped_column(String(32), nullable=True)
    log: Mapped[str] = mapped_column(Text, default="")
    seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    requested_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    version: Mapped[Version] = relationship(lazy="joined")
