"""Inventory and lifecycle through the library: create, list with filters, update, versions,
transitions with gates, and the audit entries each change leaves."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stockade.core import inventory, lifecycle
from stockade.core.db import Database
from stockade.core.errors import Conflict, IllegalTransition, InvalidInput, NotFound
from stockade.core.workspace import Workspace

K = inventory.KINDS
ACTOR = "test:alice"


@pytest.fixture
def ws(database: Database) -> Iterator[Workspace]:
    workspace = Workspace.open()
    yield workspace
    workspace.close()
    lifecycle.clear_gates()


def _create(ws: Workspace, kind: str, **values: object) -> inventory.SystemOut:
    spec = inventory.parse_spec(K[kind].create, dict(values))
    with ws.session() as s:
        return inventory.create(s, ws.audit, K[kind], spec, actor=ACTOR)


def _version(ws: Workspace, kind: str, name: str, version: str, digest_byte: str = "a") -> object:
    spec = inventory.parse_spec(
        K[kind].version_create,  # type: ignore[arg-type]
        {"version": version, "digest": "sha256:" + digest_byte * 64, "size": 10},
    )
    with ws.session() as s:
        return inventory.add_version(s, ws.audit, K[kind], name, spec, actor=ACTOR)


def _actions(ws: Workspace) -> list[tuple[str, str]]:
    with ws.session() as s:
        return [(e.action, e.subject) for e in ws.audit.entries(s, limit=1000)]


def test_create_list_show_update_are_audited(ws: Workspace) -> None:
    _create(ws, "system", name="payments", owner="risk", risk_tier="high", tags={"bu": "pay"})
    _create(ws, "system", name="support", owner="cx", risk_tier="limited")
    model = _create(ws, "model", name="fraud", system="payments", framework="sklearn")
    assert model.system == "payments"  # type: ignore[attr-defined]
    assert model.lifecycle_state == "draft"

    with ws.session() as s:
        high = inventory.list_entities(s, K["system"], inventory.InventoryFilter(risk_tier="high"))
        tagged = inventory.list_entities(s, K["system"], inventory.InventoryFilter(tag="bu=pay"))
        by_system = inventory.list_entities(
            s, K["model"], inventory.InventoryFilter(system="payments")
        )
        named = inventory.list_entities(s, K["system"], inventory.InventoryFilter(q="sup"))
    assert [e.name for e in high] == ["payments"]
    assert [e.name for e in tagged] == ["payments"]
    assert [e.name for e in by_system] == ["fraud"]
    assert [e.name for e in named] == ["support"]

    with ws.session() as s:
        updated = inventory.update(
            s,
            ws.audit,
            K["system"],
            "support",
            inventory.SystemUpdate(owner="cx-platform"),
            actor=ACTOR,
        )
    assert updated.owner == "cx-platform"
    actions = _actions(ws)
    assert ("system.create", "system:payments") in actions
    assert ("model.create", "model:fraud") in actions
    assert ("system.update", "system:support") in actions
    with ws.session() as s:
        entry = ws.audit.entries(s, action="system.update")[0]
    assert entry.details["changes"]["owner"] == {"from": "cx", "to": "cx-platform"}


def test_duplicates_missing_references_and_bad_specs_are_clear(ws: Workspace) -> None:
    _create(ws, "system", name="payments")
    with pytest.raises(Conflict, match="already exists"):
        _create(ws, "system", name="payments")
    with pytest.raises(NotFound, match="system 'nope' not found"):
        _create(ws, "model", name="m", system="nope")
    with pytest.raises(InvalidInput, match="name"):
        inventory.parse_spec(K["system"].create, {"name": "../etc/passwd"})
    with pytest.raises(InvalidInput, match="risk_tier"):
        inventory.parse_spec(K["system"].create, {"name": "ok", "risk_tier": "extreme"})
    with pytest.raises(InvalidInput, match="url"):
        inventory.parse_spec(K["model"].create, {"name": "ok", "url": "http://x"})
    with pytest.raises(InvalidInput, match="nothing to update"), ws.session() as s:
        inventory.update(
            s, ws.audit, K["system"], "payments", inventory.SystemUpdate(), actor=ACTOR
        )


def test_versions_are_immutable(ws: Workspace) -> None:
    _create(ws, "model", name="fraud")
    _version(ws, "model", "fraud", "1.0.0", "a")
    with pytest.raises(Conflict, match="immutable"):
        _version(ws, "model", "fraud", "1.0.0", "b")
    with pytest.raises(Conflict, match="already exists"):
        _version(ws, "model", "fraud", "1.0.0", "a")
    _version(ws, "model", "fraud", "1.1.0", "b")
    with ws.session() as s:
        versions = inventory.list_versions(s, K["model"], "fraud")
        latest = inventory.get(s, K["model"], "fraud")
    assert [v.version for v in versions] == ["1.0.0", "1.1.0"]
    assert latest.latest_version == "1.1.0"  # type: ignore[attr-defined]
    assert ("model.version.create", "model:fraud@1.1.0") in _actions(ws)
    with pytest.raises(InvalidInput, match="no versions"), ws.session() as s:
        inventory.list_versions(s, K["system"], "x")


def test_lifecycle_walks_forward_records_who_and_why(ws: Workspace) -> None:
    _create(ws, "model", name="fraud")
    for state in ("development", "validated", "staging", "production"):
        with ws.session() as s:
            _, outcome = inventory.transition(
                s, ws.audit, K["model"], "fraud", state, actor=ACTOR, reason=f"to {state}"
            )
        assert outcome.allowed
    with ws.session() as s:
        steps = inventory.history(s, K["model"], "fraud")
    assert [(t.from_state, t.to_state) for t in steps] == [
        ("draft", "development"),
        ("development", "validated"),
        ("validated", "staging"),
        ("staging", "production"),
    ]
    assert all(t.actor == ACTOR for t in steps)
    assert steps[-1].reason == "to production"
    assert _actions(ws).count(("lifecycle.transition", "model:fraud")) == 4


@pytest.mark.parametrize(
    ("path", "target"),
    [((), "production"), ((), "staging"), (("development",), "production"), ((), "draft")],
)
def test_illegal_transitions_are_refused(ws: Workspace, path: tuple[str, ...], target: str) -> None:
    _create(ws, "dataset", name="tx")
    for state in path:
        with ws.session() as s:
            inventory.transition(s, ws.audit, K["dataset"], "tx", state, actor=ACTOR, reason="r")
    with pytest.raises(IllegalTransition), ws.session() as s:
        inventory.transition(s, ws.audit, K["dataset"], "tx", target, actor=ACTOR, reason="r")


def test_retired_is_final_and_frozen(ws: Workspace) -> None:
    _create(ws, "endpoint", name="api")
    with ws.session() as s:
        inventory.transition(
            s, ws.audit, K["endpoint"], "api", "retired", actor=ACTOR, reason="gone"
        )
    with pytest.raises(IllegalTransition, match="retirement is final"), ws.session() as s:
        inventory.transition(s, ws.audit, K["endpoint"], "api", "draft", actor=ACTOR, reason="back")
    with pytest.raises(Conflict, match="retired"), ws.session() as s:
        inventory.update(
            s, ws.audit, K["endpoint"], "api", inventory.EndpointUpdate(url="http://x"), actor=ACTOR
        )


def test_transition_needs_a_reason(ws: Workspace) -> None:
    _create(ws, "system", name="s")
    with pytest.raises(InvalidInput, match="reason"), ws.session() as s:
        inventory.transition(s, ws.audit, K["system"], "s", "development", actor=ACTOR, reason=" ")


def test_gates_can_refuse_and_refusals_are_audited(ws: Workspace) -> None:
    seen: list[lifecycle.TransitionRequest] = []

    def no_production_without_owner(
        _session: object, request: lifecycle.TransitionRequest
    ) -> lifecycle.GateRefusal | None:
        seen.append(request)
        if request.to_state == "development" and not request.entity.owner:
            return lifecycle.GateRefusal("ownership", "an owner is required")
        return None

    lifecycle.register_gate("ownership", no_production_without_owner)
    with pytest.raises(InvalidInput, match="already registered"):
        lifecycle.register_gate("ownership", no_production_without_owner)
    _create(ws, "model", name="m")
    with ws.session() as s:
        _, outcome = inventory.transition(
            s, ws.audit, K["model"], "m", "development", actor=ACTOR, reason="go"
        )
    assert not outcome.allowed
    with pytest.raises(IllegalTransition, match="an owner is required"):
        outcome.raise_if_refused()
    with ws.session() as s:
        assert inventory.get(s, K["model"], "m").lifecycle_state == "draft"
        refusal = ws.audit.entries(s, action="lifecycle.refused")
    assert refusal[0].details["refusals"] == [
        {"gate": "ownership", "reason": "an owner is required"}
    ]
    with ws.session() as s:
        inventory.update(
            s, ws.audit, K["model"], "m", inventory.ModelUpdate(owner="me"), actor=ACTOR
        )
        _, outcome = inventory.transition(
            s, ws.audit, K["model"], "m", "development", actor=ACTOR, reason="go"
        )
    assert outcome.allowed
    assert seen[-1].subject == "model:m"


def test_model_versions_have_their_own_lifecycle(ws: Workspace) -> None:
    _create(ws, "model", name="m")
    _version(ws, "model", "m", "1")
    with ws.session() as s:
        version, outcome = inventory.transition_version(
            s, ws.audit, K["model"], "m", "1", "development", actor=ACTOR, reason="train"
        )
        steps = inventory.history(s, K["model"], "m", "1")
    assert outcome.allowed
    assert version.lifecycle_state == "development"
    assert [t.to_state for t in steps] == ["development"]
    _create(ws, "dataset", name="d")
    _version(ws, "dataset", "d", "1")
    with pytest.raises(InvalidInput, match="only model versions"), ws.session() as s:
        inventory.transition_version(
            s, ws.audit, K["dataset"], "d", "1", "development", actor=ACTOR, reason="x"
        )


def test_describe_artifact_streams_digest_and_sniffs_format(tmp_path: Path) -> None:
    import hashlib

    path = tmp_path / "model.gguf"
    data = b"GGUF" + bytes(range(256)) * 9000
    path.write_bytes(data)
    facts = inventory.describe_artifact(path)
    assert facts.digest == "sha256:" + hashlib.sha256(data).hexdigest()
    assert facts.size == len(data)
    assert facts.format == "gguf"
    link = tmp_path / "link"
    link.symlink_to(path)
    with pytest.raises(InvalidInput, match="symbolic"):
        inventory.describe_artifact(link)
    with pytest.raises(InvalidInput, match="not a regular file"):
        inventory.describe_artifact(tmp_path)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["name", "owner", "risk_tier", "tags", "system", "url", "extra"]),
        st.one_of(
            st.text(max_size=300), st.integers(), st.none(), st.dictionaries(st.text(), st.text())
        ),
    )
)
def test_parse_spec_never_raises_anything_but_invalid_input(data: dict[str, object]) -> None:
    for kind in K.values():
        try:
            spec = inventory.parse_spec(kind.create, data)
        except InvalidInput as exc:
            assert exc.message
        else:
            assert spec.name == str(data["name"]).strip()
