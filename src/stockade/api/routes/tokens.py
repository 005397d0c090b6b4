"""`/api/v1/tokens`: issue (the plaintext appears once, in the POST response), list, show and
revoke control-plane API tokens. Every route needs `tokens:manage`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal, Self

from fastapi import APIRouter, Body, Depends, Query
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from stockade.api.auth import CurrentWorkspace, DbSession, require
from stockade.api.errors import documented
from stockade.api.routes import API_PREFIX, Timestamp
from stockade.core import clock
from stockade.core.errors import InvalidInput
from stockade.core.tokens import (
    Permission,
    Principal,
    Role,
    TokenInfo,
    create_token,
    get_token,
    list_tokens,
    revoke_token,
)

__all__ = ["IssuedTokenOut", "TokenCreate", "TokenList", "TokenOut", "TokenRevoke", "router"]

router = APIRouter(
    prefix=f"{API_PREFIX}/tokens",
    tags=["tokens"],
    responses=documented(401, 403, 422, 503),
)

Manager = Annotated[Principal, Depends(require(Permission.tokens_manage))]
SHOWN_ONCE = "Store this token now: it is not stored in clear and will not be shown again."


class TokenOut(BaseModel):
    id: str = Field(description="Public token id; the token reads stk_<id>_<secret>.")
    name: str
    role: Role
    state: Literal["active", "expired", "revoked"]
    created_by: str
    created_at: Timestamp
    expires_at: Timestamp | None
    revoked_at: Timestamp | None
    last_used_at: Timestamp | None

    @classmethod
    def of(cls, info: TokenInfo) -> Self:
        return cls(
            id=info.id,
            name=info.name,
            role=info.role,
            state=info.state,  # type: ignore[arg-type]
            created_by=info.created_by,
            created_at=info.created_at,
            expires_at=info.expires_at,
            revoked_at=info.revoked_at,
            last_used_at=info.last_used_at,
        )


class TokenList(BaseModel):
    tokens: list[TokenOut]


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    role: Role
    expires_at: AwareDatetime | None = Field(default=None, description="Absolute expiry.")
    expires_in_days: int | None = Field(
        default=None, ge=1, le=3650, description="Expiry relative to now (instead of expires_at)."
    )

    @model_validator(mode="after")
    def _one_expiry(self) -> Self:
        if self.expires_at is not None and self.expires_in_days is not None:
            raise ValueError("give expires_at or expires_in_days, not both")
        return self


class IssuedTokenOut(TokenOut):
    token: str = Field(description="The plaintext token. Returned once, never again.")
    warning: str = SHOWN_ONCE


class TokenRevoke(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=1000)


@router.get("", summary="List API tokens (without secrets)")
def get_tokens(
    _principal: Manager,
    session: DbSession,
    include_revoked: Annotated[bool, Query(description="Include revoked tokens.")] = False,
) -> TokenList:
    return TokenList(tokens=[TokenOut.of(t) for t in list_tokens(session, include_revoked)])


@router.post(
    "",
    status_code=201,
    summary="Issue an API token; the response holds its plaintext, shown this once",
    responses=documented(400),
)
def post_token(
    body: TokenCreate, principal: Manager, session: DbSession, workspace: CurrentWorkspace
) -> IssuedTokenOut:
    expires_at = body.expires_at
    if body.expires_in_days is not None:
        expires_at = clock.now() + timedelta(days=body.expires_in_days)
    issued, info = create_token(
        session,
        workspace.audit,
        name=body.name,
        role=body.role,
        actor=principal.actor,
        expires_at=expires_at,
    )
    return IssuedTokenOut(**TokenOut.of(info).model_dump(), token=issued.token)


@router.get("/{token_id}", summary="One API token (without its secret)", responses=documented(404))
def get_one_token(token_id: str, _principal: Manager, session: DbSession) -> TokenOut:
    return TokenOut.of(get_token(session, token_id))


@router.delete(
    "/{token_id}",
    summary="Revoke an API token (reason in the JSON body or the `reason` query parameter)",
    responses=documented(400, 404, 409),
)
def delete_token(
    token_id: str,
    principal: Manager,
    session: DbSession,
    workspace: CurrentWorkspace,
    body: Annotated[TokenRevoke | None, Body()] = None,
    reason: Annotated[str | None, Query(min_length=1, max_length=1000)] = None,
) -> TokenOut:
    given = body.reason if body is not None else reason
    if not given or not given.strip():
        raise InvalidInput('a reason is required: JSON body {"reason": ...} or ?reason=')
    info = revoke_token(
        session, workspace.audit, token_id=token_id, actor=principal.actor, reason=given
    )
    return TokenOut.of(info)
