"""Accounts and API tokens.

A token is 32 random bytes, shown once when it is made and stored only as its sha256: the
token's own entropy makes a slow hash unnecessary, and the digest lets a request's token be
found with one indexed lookup. Clients send it as ``Authorization: Bearer <token>``. A token
is revoked, never deleted (``revoked_at``): the row keeps saying when it was made and ended.
"""

from __future__ import annotations

import hashlib
import re
import secrets

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dgml.db import utcnow
from dgml.errors import Conflict, Invalid, NotFound, Unauthorized
from registry.models import ApiToken, User

TOKEN_PREFIX = "dgml_"
USER_NAME_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38}[A-Za-z0-9])?$")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def check_user_name(name: str) -> str:
    if not isinstance(name, str) or not USER_NAME_RE.match(name) or "--" in name:
        raise Invalid(
            "a user name is 1 to 40 letters, digits or single hyphens, "
            "not starting or ending with a hyphen",
            field="name",
        )
    return name


def create_user(session: Session, name: str, *, is_admin: bool = False) -> User:
    """Create an account; the caller commits. 409 if the name is taken (in any case)."""
    check_user_name(name)
    user = User(name=name, name_folded=name.casefold(), is_admin=is_admin)
    session.add(user)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        raise Conflict(f"the name {name!r} is taken", field="name") from None
    return user


def issue_token(session: Session, user: User, label: str = "") -> str:
    """Make a new token for ``user`` and return it; only its hash is kept."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(
        ApiToken(user_id=user.id, token_hash=hash_token(token), prefix=token[:12], label=label)
    )
    session.flush()
    return token


def authenticate(session: Session, token: str) -> User:
    row = session.scalar(
        select(ApiToken).where(
            ApiToken.token_hash == hash_token(token), ApiToken.revoked_at.is_(None)
        )
    )
    if row is None:
        raise Unauthorized("the token is not valid (unknown or revoked)")
    return row.user


def revoke_token(session: Session, token: str) -> ApiToken:
    """Revoke ``token`` now; the caller commits. From then on it opens nothing (401).

    One conditional update does it, so of two revocations of one token only one succeeds: the
    other finds it revoked and answers 401, as any request with it would."""
    row_id = session.scalar(
        update(ApiToken)
        .where(ApiToken.token_hash == hash_token(token), ApiToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
        .returning(ApiToken.id)
    )
    if row_id is None:
        raise Unauthorized("the token is not valid (unknown or revoked)")
    return session.get_one(ApiToken, row_id, populate_existing=True)


def user_by_name(session: Session, name: str) -> User:
    user = session.scalar(select(User).where(User.name_folded == name.casefold()))
    if user is None:
        raise NotFound(f"no user {name!r}")
    return user
