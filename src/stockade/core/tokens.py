"""Control-plane API tokens and roles: issue (shown once), authenticate, revoke, list.

A token is `stk_<id>_<secret>`; only a per-token salt and SHA-256(salt || secret) are stored.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from stockade.core import clock
from stockade.core.errors import AuthError, Conflict, InvalidInput, NotFound, PermissionDenied
from stockade.core.tables import ApiToken

if TYPE_CHECKING:
    from stockade.core.audit import AuditLog

__all__ = [
    "ROLE_PERMISSIONS",
    "TOKEN_PREFIX",
    "IssuedToken",
    "Permission",
    "Principal",
    "Role",
    "TokenInfo",
    "authenticate",
    "create_token",
    "get_token",
    "list_tokens",
    "parse_token",
    "revoke_token",
]

TOKEN_PREFIX = "stk_"  # noqa: S105 (the public prefix)
_ID_HEX_CHARS = 12
_SECRET_BYTES = 32  # 256 bits
_SALT_BYTES = 16
_TOKEN_ID = re.compile(r"[0-9a-f]{12}")
_TOKEN = re.compile(r"stk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")
_MAX_PRESENTED = 200  # anything longer is not a token; never run the regex on megabytes
_LAST_USED_GRANULARITY = timedelta(minutes=1)
_INVALID = "invalid API token"
# Hashed when the id is unknown, so an unknown id costs the same work as a wrong secret.
_DECOY_SALT = secrets.token_bytes(_SALT_BYTES)
_DECOY_HASH = hashlib.sha256(_DECOY_SALT + b"decoy").digest()


class Permission(StrEnum):
    inventory_read = "inventory:read"
    inventory_write = "inventory:write"
    evidence_read = "evidence:read"
    evidence_write = "evidence:write"
    events_read = "events:read"
    events_write = "events:write"
    audit_read = "audit:read"
    audit_write = "audit:write"  # checkpoints
    keys_read = "keys:read"  # public keys, to verify checkpoints and signatures
    keys_manage = "keys:manage"
    tokens_manage = "tokens:manage"


class Role(StrEnum):
    admin = "admin"
    engineer = "engineer"
    auditor = "auditor"
    service = "service"


_READ_ALL = frozenset(
    {
        Permission.inventory_read,
        Permission.evidence_read,
        Permission.events_read,
        Permission.audit_read,
        Permission.keys_read,
    }
)

ROLE_PERMISSIONS: Mapping[Role, frozenset[Permission]] = {
    Role.admin: frozenset(Permission),
    Role.engineer: _READ_ALL | {Permission.inventory_write, Permission.evidence_write},
    Role.auditor: _READ_ALL,
    Role.service: frozenset(
        {Permission.inventory_read, Permission.events_write, Permission.evidence_write}
    ),
}


@dataclass(frozen=True)
class Principal:
    """Who a request acts as: the token that authenticated it and what its role allows."""

    token_id: str
    name: str
    role: Role
    permissions: frozenset[Permission]

    @property
    def actor(self) -> str:
        """The actor recorded in audit entries."""
        return f"token:{self.token_id}"

    def can(self, permission: Permission | str) -> bool:
        return permission in self.permissions

    def require(self, permission: Permission | str) -> None:
        if not self.can(permission):
            raise PermissionDenied(
                f"token {self.token_id} (role {self.role.value}) lacks permission {permission}"
            )


@dataclass(frozen=True)
class TokenInfo:
    """What is known about a token without its secret."""

    id: str
    name: str
    role: Role
    created_by: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None

    @property
    def state(self) -> str:
        """`active`, `expired` or `revoked`, as of now."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= clock.now():
            return "expired"
        return "active"

    @classmethod
    def from_row(cls, row: ApiToken) -> TokenInfo:
        return cls(
            id=row.id,
            name=row.name,
            role=Role(row.role),
            created_by=row.created_by,
            created_at=row.created_at,
            expires_at=row.expires_at,
            revoked_at=row.revoked_at,
            last_used_at=row.last_used_at,
        )


@dataclass(frozen=True)
class IssuedToken:
    """A freshly created token. `token` is the only copy of the plaintext: show it once."""

    token: str = field(repr=False)
    info: TokenInfo

    @property
    def token_id(self) -> str:
        return self.info.id


def parse_token(presented: str) -> tuple[str, str]:
    """Split `stk_<id>_<secret>` into (id, secret); `AuthError` if it is not of that form."""
    if len(presented) > _MAX_PRESENTED or not _TOKEN.fullmatch(presented):
        raise AuthError("malformed API token: expected stk_<id>_<secret>")
    return presented[4:16], presented[17:]


def _hash(salt: bytes, secret: str) -> bytes:
    return hashlib.sha256(salt + secret.encode("ascii")).digest()


def _clean_name(name: str) -> str:
    name = name.strip()
    if not 1 <= len(name) <= 200:
        raise InvalidInput("token name must be 1 to 200 characters")
    if any(not ch.isprintable() for ch in name):
        raise InvalidInput("token name must not contain control characters")
    return name


def _role(role: Role | str) -> Role:
    try:
        return Role(role)
    except ValueError:
        raise InvalidInput(
            f"unknown role {role!r}: use one of {', '.join(r.value for r in Role)}"
        ) from None


def create_token(
    session: Session,
    audit: AuditLog,
    *,
    name: str,
    role: Role | str,
    actor: str,
    expires_at: datetime | None = None,
) -> tuple[IssuedToken, TokenInfo]:
    """Issue a new token; the plaintext exists only in the returned `IssuedToken`."""
    name = _clean_name(name)
    role = _role(role)
    if not actor:
        raise InvalidInput("actor is required")
    moment = clock.now()
    if expires_at is not None:
        if expires_at.tzinfo is None:
            raise InvalidInput("expiry must carry a timezone")
        if expires_at <= moment:
            raise InvalidInput("expiry must be in the future")
    token_id = secrets.token_hex(_ID_HEX_CHARS // 2)
    while session.get(ApiToken, token_id) is not None:  # 48 bits: rare, but never reuse
        token_id = secrets.token_hex(_ID_HEX_CHARS // 2)
    secret = secrets.token_urlsafe(_SECRET_BYTES)
    salt = secrets.token_bytes(_SALT_BYTES)
    row = ApiToken(
        id=token_id,
        name=name,
        role=role.value,
        salt=salt,
        secret_hash=_hash(salt, secret),
        created_by=actor,
        created_at=moment,
        expires_at=expires_at,
    )
    session.add(row)
    session.flush()
    details: dict[str, object] = {"name": name, "role": role.value}
    if expires_at is not None:
        details["expires_at"] = clock.format_time(expires_at)
    audit.append(
        session, actor=actor, action="token.create", subject=f"token:{token_id}", details=details
    )
    info = TokenInfo.from_row(row)
    return IssuedToken(token=f"{TOKEN_PREFIX}{token_id}_{secret}", info=info), info


def authenticate(session: Session, presented: str) -> Principal:
    """The principal of a presented token, or `AuthError` (malformed, unknown, wrong secret,
    expired, revoked). Unknown id and wrong secret give the same message after the same work.
    """
    token_id, secret = parse_token(presented)
    row = session.get(ApiToken, token_id)
    if row is None:
        hmac.compare_digest(_hash(_DECOY_SALT, secret), _DECOY_HASH)
        raise AuthError(_INVALID)
    if not hmac.compare_digest(_hash(row.salt, secret), row.secret_hash):
        raise AuthError(_INVALID)
    moment = clock.now()
    if row.revoked_at is not None:
        raise AuthError(f"API token {token_id} has been revoked")
    if row.expires_at is not None and row.expires_at <= moment:
        raise AuthError(f"API token {token_id} expired at {clock.format_time(row.expires_at)}")
    if row.last_used_at is None or moment - row.last_used_at >= _LAST_USED_GRANULARITY:
        row.last_used_at = moment
        session.flush()
    role = Role(row.role)
    return Principal(token_id=row.id, name=row.name, role=role, permissions=ROLE_PERMISSIONS[role])


def _row(session: Session, token_id: str, *, for_update: bool = False) -> ApiToken:
    # Ids that cannot exist never reach the database (nor its text-encoding rules).
    row = (
        session.get(ApiToken, token_id, with_for_update=for_update)
        if _TOKEN_ID.fullmatch(token_id)
        else None
    )
    if row is None:
        raise NotFound(f"API token {token_id[:40]!r} not found")
    return row


def get_token(session: Session, token_id: str) -> TokenInfo:
    return TokenInfo.from_row(_row(session, token_id))


def revoke_token(
    session: Session, audit: AuditLog, *, token_id: str, actor: str, reason: str
) -> TokenInfo:
    """Revoke a token for good; it stops authenticating at once."""
    reason = reason.strip()
    if not reason:
        raise InvalidInput("a reason is required to revoke a token")
    if not actor:
        raise InvalidInput("actor is required")
    row = _row(session, token_id, for_update=True)
    if row.revoked_at is not None:
        raise Conflict(
            f"API token {token_id} was already revoked at {clock.format_time(row.revoked_at)}"
        )
    row.revoked_at = clock.now()
    session.flush()
    audit.append(
        session,
        actor=actor,
        action="token.revoke",
        subject=f"token:{token_id}",
        details={"name": row.name, "role": row.role, "reason": reason},
    )
    return TokenInfo.from_row(row)


def list_tokens(session: Session, include_revoked: bool = False) -> list[TokenInfo]:
    """Tokens oldest first; revoked ones only when asked."""
    query = select(ApiToken).order_by(ApiToken.created_at, ApiToken.id)
    if not include_revoked:
        query = query.where(ApiToken.revoked_at.is_(None))
    return [TokenInfo.from_row(row) for row in session.scalars(query)]
