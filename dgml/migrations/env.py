"""Alembic environment. Migrations run from :func:`dgml.db.migrate` with a live connection,
or from the ``alembic`` command with ``-x url=...`` when writing a new migration."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

import dgml.outbox  # noqa: F401  (registers the outbox table)
import registry.models  # noqa: F401  (registers the registry tables)
import router.models  # noqa: F401  (registers the router tables)
from dgml.db import Base

target_metadata = Base.metadata


def run_with(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is not None:
    run_with(connection)
else:
    url = context.get_x_argument(as_dictionary=True)["url"]
    with create_engine(url).connect() as conn:
        run_with(conn)
        conn.commit()
