"""registry

Revision ID: 3f5091505b41
Revises:
Create Date: 2026-11-27 16:48:46.922149
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import dgml.db

revision: str = "3f5091505b41"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    # designs and versions refer to each other: SQLite accepts the forward reference inline,
    # other databases get the constraint once both tables exist.
    forked_from_fk = dict(
        columns=["forked_from_version_id"],
        refcolumns=["versions.id"],
        name=op.f("fk_designs_forked_from_version_id_versions"),
    )
    forked_from_fk_inline = (
        [
            sa.ForeignKeyConstraint(
                forked_from_fk["columns"], forked_from_fk["refcolumns"], name=forked_from_fk["name"]
            )
        ]
        if sqlite
        else []
    )
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=40), nullable=False),
        sa.Column("name_folded", sa.String(length=40), nullable=False),
        sa.Column("is_admin", sa.Boolean(), nullable=False),
        sa.Column("created_at", dgml.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("name_folded", name=op.f("uq_users_name_folded")),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("label", sa.String(length=100), nullable=False),
        sa.Column("created_at", dgml.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", dgml.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_api_tokens_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_api_tokens_token_hash")),
    )
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_api_tokens_user_id"), ["user_id"], unique=False)

    op.create_table(
        "designs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("owner_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("name_folded", sa.String(length=100), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("license", sa.String(length=64), nullable=False),
        sa.Column("archived", sa.Boolean(), nullable=False),
        sa.Column("version_count", sa.Integer(), nullable=False),
        sa.Column("fork_count", sa.Integer(), nullable=False),
        sa.Column("forked_from_version_id", sa.Integer(), nullable=True),
        sa.Column("search_text", sa.Text(), nullable=False),
        sa.Column("created_at", dgml.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", dgml.db.UTCDateTime(timezone=True), nullable=False),
        *forked_from_fk_inline,
        sa.ForeignKeyConstraint(["owner_id"], ["users.id"], name=op.f("fk_designs_owner_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_designs")),
        sa.UniqueConstraint(
            "owner_id", "name_folded", name=op.f("uq_designs_owner_id_name_folded")
        ),
    )
    with op.batch_alter_table("designs", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_designs_forked_from_version_id"),
            ["forked_from_version_id"],
            unique=False,
        )
        batch_op.create_index(batch_op.f("ix_designs_license"), ["license"], unique=False)
        batch_op.create_index(batch_op.f("ix_designs_owner_id"), ["owner_id"], unique=False)

    op.create_table(
        "design_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("design_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("actor_id", sa.Integer(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("created_at", dgml.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["actor_id"], ["users.id"], name=op.f("fk_design_events_actor_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["design_id"], ["designs.id"], name=op.f("fk_design_events_design_id_designs")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_design_events")),
    )
    with op.batch_alter_table("design_events", schema=None) as batch_op:
        batch_op.create_index("ix_design_events_design_id_id", ["design_id", "id"], unique=False)

    op.create_table(
        "design_maintainers",
        sa.Column("design_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("added_at", dgml.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["design_id"],
            ["designs.id"],
            name=op.f("fk_design_maintainers_design_id_designs"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_design_maintainers_user_id_users")
        ),
        sa.PrimaryKeyConstraint("design_id", "user_id", name=op.f("pk_design_maintainers")),
    )
    op.create_table(
        "design_tags",
        sa.Column("design_id", sa.Integer(), nullable=False),
        sa.Column("tag", sa.String(length=50), nullable=False),
        sa.ForeignKeyConstraint(
            ["design_id"],
            ["designs.id"],
            name=op.f("fk_design_tags_design_id_designs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("design_id", "tag", name=op.f("pk_design_tags")),
    )
    with op.batch_alter_table("design_tags", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_design_tags_tag"), ["tag"], unique=False)

    op.create_table(
        "versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("design_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("tag", sa.String(length=64), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("license", sa.String(length=64), nullable=False),
        sa.Column("manifest", sa.JSON(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("author_id", sa.Integer(), nullable=False),
        sa.Column("created_at", dgml.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("contributors", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["author_id"], ["users.id"], name=op.f("fk_versions_author_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["design_id"], ["designs.id"], name=op.f("fk_versions_design_id_designs")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_versions")),
        sa.UniqueConstraint("design_id", "number", name=op.f("uq_versions_design_id_number")),
        sa.UniqueConstraint("design_id", "tag", name=op.f("uq_versions_design_id_tag")),
    )
    with op.batch_alter_table("versions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_versions_author_id"), ["author_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_versions_design_id"), ["design_id"], unique=False)
    if not sqlite:
        op.create_foreign_key(
            forked_from_fk["name"], "designs", "versions", ["forked_from_version_id"], ["id"]
        )

    op.create_table(
        "change_requests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("design_id", sa.Integer(), nullable=False),
        sa.Column("source_version_id", sa.Integer(), nullable=False),
        sa.Column("author_id", sa.Integer(), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("decided_by_id", sa.Integer(), nullable=True),
        sa.Column("decided_at", dgml.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("decision_message", sa.Text(), nullable=False),
        sa.Column("merged_version_id", sa.Integer(), nullable=True),
        sa.Column("created_at", dgml.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["author_id"], ["users.id"], name=op.f("fk_change_requests_author_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["decided_by_id"], ["users.id"], name=op.f("fk_change_requests_decided_by_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["design_id"], ["designs.id"], name=op.f("fk_change_requests_design_id_designs")
        ),
        sa.ForeignKeyConstraint(
            ["merged_version_id"],
            ["versions.id"],
            name=op.f("fk_change_requests_merged_version_id_versions"),
        ),
        sa.ForeignKeyConstraint(
            ["source_version_id"],
            ["versions.id"],
            name=op.f("fk_change_requests_source_version_id_versions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_change_requests")),
    )
    with op.batch_alter_table("change_requests", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_change_requests_design_id"), ["design_id"], unique=False
        )

    op.create_table(
        "version_files",
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("path", sa.String(length=512), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("media_type", sa.String(length=100), nullable=False),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["versions.id"],
            name=op.f("fk_version_files_version_id_versions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("version_id", "path", name=op.f("pk_version_files")),
    )
    with op.batch_alter_table("version_files", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_version_files_sha256"), ["sha256"], unique=False)

    op.create_table(
        "version_parents",
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("parent_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["parent_id"], ["versions.id"], name=op.f("fk_version_parents_parent_id_versions")
        ),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["versions.id"],
            name=op.f("fk_version_parents_version_id_versions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("version_id", "position", name=op.f("pk_version_parents")),
    )
    with op.batch_alter_table("version_parents", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_version_parents_parent_id"), ["parent_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("version_parents", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_version_parents_parent_id"))

    op.drop_table("version_parents")
    with op.batch_alter_table("version_files", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_version_files_sha256"))

    op.drop_table("version_files")
    with op.batch_alter_table("change_requests", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_change_requests_design_id"))

    op.drop_table("change_requests")
    with op.batch_alter_table("versions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_versions_design_id"))
        batch_op.drop_index(batch_op.f("ix_versions_author_id"))

    if op.get_bind().dialect.name != "sqlite":
        op.drop_constraint(
            "fk_designs_forked_from_version_id_versions", "designs", type_="foreignkey"
        )
    op.drop_table("versions")
    with op.batch_alter_table("design_tags", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_design_tags_tag"))

    op.drop_table("design_tags")
    op.drop_table("design_maintainers")
    with op.batch_alter_table("design_events", schema=None) as batch_op:
        batch_op.drop_index("ix_design_events_design_id_id")

    op.drop_table("design_events")
    with op.batch_alter_table("designs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_designs_owner_id"))
        batch_op.drop_index(batch_op.f("ix_designs_license"))
        batch_op.drop_index(batch_op.f("ix_designs_forked_from_version_id"))

    op.drop_table("designs")
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_api_tokens_user_id"))

    op.drop_table("api_tokens")
    op.drop_table("users")
