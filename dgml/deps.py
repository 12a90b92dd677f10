"""Typed FastAPI dependencies shared by every domain's routes.

The engine, session factory, blob store and Redis client are made once in the app's lifespan
and kept on ``app.state``; routes reach them only through these dependencies, so tests can
replace any of them with ``app.dependency_overrides``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from redis import Redis
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from dgml.db import WRITE
from dgml.errors import Unauthorized
from dgml.settings import Settings
from registry.accounts import authenticate
from registry.blobs import BlobStore
from registry.cache import BlobBytesCache, VersionCache
from registry.models import User


@dataclass
class Services:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    blobs: BlobStore
    redis: Redis | None
    versions: VersionCache
    file_bytes: BlobBytesCache


async def get_services(request: Request) -> Services:
    # async: a plain attribute read should not cost a trip through the thread pool.
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]


def get_session(services: ServicesDep) -> Iterator[Session]:
    with services.sessions() as session:
        yield session


def get_write_session(services: ServicesDep) -> Iterator[Session]:
    """A session for routes that write; they commit before they answer."""
    with services.sessions() as session:
        session.connection(execution_options=WRITE)
        yield session


SessionDep = Annotated[Session, Depends(get_session)]
WriteSessionDep = Annotated[Session, Depends(get_write_session)]


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("send the token as 'Authorization: Bearer <token>'")
    return token.strip()


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a plain value, so it can be used with any session."""

    id: int
    name: str
    is_admin: bool

    def load(self, session: Session) -> User:
        user = session.get(User, self.id)
        if user is None:  # the account went away between authentication and now
            raise Unauthorized("the account of this token no longer exists")
        return user


def authenticated(request: Request, services: ServicesDep) -> Principal:
    token = bearer_token(request)
    if token is None:
        raise Unauthorized("this needs a token: 'Authorization: Bearer <token>'")
    with services.sessions() as session:
        user = authenticate(session, token)
        return Principal(user.id, user.name, user.is_admin)


Caller = Annotated[Principal, Depends(authenticated)]
