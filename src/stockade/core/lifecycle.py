"""Lifecycle states and the one function that moves an inventory entity between them.

Later phases hook their gates in here (`register_gate`): a gate sees every requested
transition and may refuse it with reasons. Allowed and refused decisions are both audited.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy.orm import Session

from stockade.core.errors import IllegalTransition, InvalidInput
from stockade.core.tables import LifecycleTransition

if TYPE_CHECKING:
    from stockade.core.audit import AuditLog

__all__ = [
    "STATES",
    "TRANSITIONS",
    "Gate",
    "GateRefusal",
    "LifecycleState",
    "TransitionOutcome",
    "TransitionRequest",
    "clear_gates",
    "legal_targets",
    "register_gate",
    "transition",
    "unregister_gate",
]

LifecycleState = Literal["draft", "development", "validated", "staging", "production", "retired"]
STATES: tuple[str, ...] = ("draft", "development", "validated", "staging", "production", "retired")

# Forward one step at a time; back to an earlier stage when something fails; retire from
# anywhere; nothing leaves `retired` (retirement is final: a model must not be resurrected).
TRANSITIONS: dict[str, frozenset[str]] = {
    "draft": frozenset({"development", "retired"}),
    "development": frozenset({"validated", "draft", "retired"}),
    "validated": frozenset({"staging", "development", "retired"}),
    "staging": frozenset({"production", "validated", "development", "retired"}),
    "production": frozenset({"staging", "retired"}),
    "retired": frozenset(),
}


def legal_targets(state: str) -> list[str]:
    return [s for s in STATES if s in TRANSITIONS.get(state, frozenset())]


@dataclass(frozen=True)
class TransitionRequest:
    """What a gate is shown: the entity, where it is, where it should go, who asks and why."""

    entity_type: str
    entity_id: str
    subject: str
    from_state: str
    to_state: str
    actor: str
    reason: str
    entity: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class GateRefusal:
    gate: str
    reason: str


Gate = Callable[[Session, TransitionRequest], GateRefusal | None]
"""A gate returns None to let a transition pass, or a refusal with its reason."""

_gates: list[tuple[str, Gate]] = []
_gates_lock = threading.Lock()


def register_gate(name: str, gate: Gate) -> None:
    with _gates_lock:
        if any(existing == name for existing, _ in _gates):
            raise InvalidInput(f"a lifecycle gate named {name!r} is already registered")
        _gates.append((name, gate))


def unregister_gate(name: str) -> None:
    with _gates_lock:
        _gates[:] = [(n, g) for n, g in _gates if n != name]


def clear_gates() -> None:
    with _gates_lock:
        _gates.clear()


@dataclass(frozen=True)
class TransitionOutcome:
    request: TransitionRequest
    allowed: bool
    refusals: tuple[GateRefusal, ...] = ()

    def raise_if_refused(self) -> None:
        if not self.allowed:
            reasons = "; ".join(f"{r.gate}: {r.reason}" for r in self.refusals)
            raise IllegalTransition(
                f"{self.request.subject}: {self.request.from_state} -> {self.request.to_state} "
                f"refused by gate ({reasons})"
            )


def transition(
    session: Session,
    audit: AuditLog,
    *,
    entity: Any,
    entity_type: str,
    subject: str,
    to_state: str,
    actor: str,
    reason: str,
) -> TransitionOutcome:
    """Move `entity` (any row with `id` and `lifecycle_state`) to `to_state`.

    Illegal moves raise `IllegalTransition`. A gate refusal is audited and returned as an
    outcome with `allowed=False`, so the caller can commit the audit entry and then report.
    """
    reason = (reason or "").strip()
    if not reason:
        raise InvalidInput("a lifecycle transition needs a reason")
    if len(reason) > 2000:
        raise InvalidInput("a transition reason must be at most 2000 characters")
    if "\x00" in reason:
        raise InvalidInput("a transition reason must not contain NUL characters")
    if to_state not in STATES:
        raise InvalidInput(f"unknown lifecycle state {to_state!r}; states: {', '.join(STATES)}")
    from_state = entity.lifecycle_state
    if to_state == from_state:
        raise IllegalTransition(f"{subject} is already {from_state}")
    if to_state not in TRANSITIONS[from_state]:
        allowed = ", ".join(legal_targets(from_state)) or "none (retirement is final)"
        raise IllegalTransition(
            f"{subject}: {from_state} -> {to_state} is not allowed; from {from_state}: {allowed}"
        )
    request = TransitionRequest(
        entity_type=entity_type,
        entity_id=entity.id,
        subject=subject,
        from_state=from_state,
        to_state=to_state,
        actor=actor,
        reason=reason,
        entity=entity,
    )
    with _gates_lock:
        gates = list(_gates)
    refusals = tuple(r for _name, gate in gates if (r := gate(session, request)) is not None)
    details = {"from": from_state, "to": to_state, "reason": reason}
    if refusals:
        audit.append(
            session,
            actor=actor,
            action="lifecycle.refused",
            subject=subject,
            details={
                **details,
                "refusals": [{"gate": r.gate, "reason": r.reason} for r in refusals],
            },
        )
        return TransitionOutcome(request, allowed=False, refusals=refusals)
    entity.lifecycle_state = to_state
    session.add(
        LifecycleTransition(
            entity_type=entity_type,
            entity_id=entity.id,
            from_state=from_state,
            to_state=to_state,
            actor=actor,
            reason=reason,
        )
    )
    audit.append(
        session, actor=actor, action="lifecycle.transition", subject=subject, details=details
    )
    session.flush()
    return TransitionOutcome(request, allowed=True)
