"""The demo workspace: a real scikit-learn fraud model and the dataset it was trained on,
generated locally from a fixed seed and registered in the inventory, so that every phase
has something real to act on. Nothing is downloaded.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select

from stockade.core import inventory
from stockade.core.errors import ConfigError
from stockade.core.tables import AISystem
from stockade.core.workspace import Workspace

__all__ = ["DemoWorkspace", "seed_demo"]

SEED = 20261126
ACTOR = "system:demo-seed"
FEATURES = ["amount", "hour", "merchant_risk", "card_present", "velocity_1h", "distance_km"]


@dataclass(frozen=True)
class DemoWorkspace:
    created: bool
    folder: Path
    files: tuple[Path, ...]


def _transactions(rows: int) -> tuple[Any, Any]:
    import numpy as np

    rng = np.random.default_rng(SEED)
    amount = np.round(rng.lognormal(3.5, 1.1, rows), 2)
    hour = rng.integers(0, 24, rows)
    merchant_risk = np.round(rng.beta(2, 8, rows), 4)
    card_present = rng.random(rows) < 0.7
    velocity = rng.poisson(1.2, rows)
    distance = np.round(rng.exponential(12.0, rows), 1)
    logit = (
        -5.2
        + 0.9 * np.log1p(amount) / 3
        + 3.5 * merchant_risk
        - 1.4 * card_present
        + 0.45 * velocity
        + 0.012 * distance
        + 0.8 * ((hour < 5) | (hour > 22))
    )
    fraud = rng.random(rows) < 1 / (1 + np.exp(-logit))
    features = np.column_stack([amount, hour, merchant_risk, card_present, velocity, distance])
    return features, fraud.astype(int)


def _write_csv(path: Path, features: Any, labels: Any) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["transaction_id", *FEATURES, "is_fraud"])
    for i, (row, label) in enumerate(zip(features, labels, strict=True)):
        writer.writerow([f"tx-{i:06d}", *(f"{v:g}" for v in row), int(label)])
    path.write_text(buffer.getvalue(), encoding="utf-8")


def _train(features: Any, labels: Any, kind: str) -> tuple[Any, float]:
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x_train, x_test, y_train, y_test = train_test_split(
        features, labels, test_size=0.25, random_state=SEED % 1000, stratify=labels
    )
    if kind == "logistic":
        estimator = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))
    else:
        estimator = GradientBoostingClassifier(n_estimators=60, max_depth=3, random_state=0)
    estimator.fit(x_train, y_train)
    auc = float(roc_auc_score(y_test, estimator.predict_proba(x_test)[:, 1]))
    return estimator, auc


def seed_demo(ws: Workspace) -> DemoWorkspace:
    """Generate the demo artifacts under STOCKADE_HOME/demo and register them (idempotent)."""
    folder = ws.settings.home / "demo"
    with ws.session() as session:
        if session.scalar(select(AISystem.id).where(AISystem.name == "payments-fraud")):
            return DemoWorkspace(False, folder, tuple(sorted(folder.glob("*"))))
    try:
        import joblib
    except ImportError as exc:
        raise ConfigError(
            "the demo workspace needs scikit-learn: pip install 'stockade[demo]'"
        ) from exc

    folder.mkdir(parents=True, exist_ok=True)
    features, labels = _transactions(4000)
    dataset_path = folder / "transactions-v1.csv"
    _write_csv(dataset_path, features, labels)
    model_paths = {}
    metrics = {}
    for version, kind in (("1.0.0", "logistic"), ("1.1.0", "boosting")):
        estimator, auc = _train(features, labels, kind)
        path = folder / f"fraud-detector-{version}.joblib"
        joblib.dump(estimator, path)
        model_paths[version] = path
        metrics[version] = {"algorithm": kind, "roc_auc": f"{auc:.4f}"}

    K = inventory.KINDS
    P = inventory.parse_spec
    with ws.session() as session:
        audit = ws.audit

        def create(kind: str, **values: Any) -> None:
            inventory.create(session, audit, K[kind], P(K[kind].create, values), actor=ACTOR)

        def add_file(kind: str, name: str, version: str, path: Path, **values: Any) -> None:
            facts = inventory.describe_artifact(path)
            spec = P(
                K[kind].version_create,  # type: ignore[arg-type]
                {
                    "version": version,
                    "digest": facts.digest,
                    "size": facts.size,
                    "source_uri": path.as_uri(),
                    **values,
                },
            )
            inventory.add_version(session, audit, K[kind], name, spec, actor=ACTOR)

        def move(kind: str, name: str, *states: str, version: str | None = None) -> None:
            for state in states:
                reason = f"demo workspace: {state}"
                if version:
                    _, outcome = inventory.transition_version(
                        session, audit, K[kind], name, version, state, actor=ACTOR, reason=reason
                    )
                else:
                    _, outcome = inventory.transition(
                        session, audit, K[kind], name, state, actor=ACTOR, reason=reason
                    )
                outcome.raise_if_refused()

        create(
            "system",
            name="payments-fraud",
            description="Scores card transactions for fraud before authorisation.",
            owner="risk-ml@example.com",
            risk_tier="high",
            tags={"business_unit": "payments", "eu_ai_act": "annex-iii-5b"},
        )
        create(
            "system",
            name="support-assistant",
            description="LLM assistant answering customer support questions.",
            owner="cx-platform@example.com",
            risk_tier="limited",
            tags={"business_unit": "customer-experience"},
        )
        create(
            "dataset",
            name="card-transactions",
            system="payments-fraud",
            description="Synthetic card transactions with fraud labels (generated locally).",
            owner="risk-data@example.com",
            risk_tier="high",
            source_uri=dataset_path.as_uri(),
            license="CC0-1.0",
        )
        add_file(
            "dataset",
            "card-transactions",
            "2026-11-01",
            dataset_path,
            format="csv",
            row_count=len(labels),
        )
        create(
            "model",
            name="fraud-detector",
            system="payments-fraud",
            description="Binary classifier: probability that a transaction is fraudulent.",
            owner="risk-ml@example.com",
            risk_tier="high",
            task="tabular-classification",
            framework="scikit-learn",
        )
        for version, path in model_paths.items():
            tags = {**metrics[version], "trained_on": "card-transactions@2026-11-01"}
            add_file("model", "fraud-detector", version, path, format="joblib-pickle", tags=tags)
        create(
            "model",
            name="support-llm",
            system="support-assistant",
            description="Hosted chat model behind the support assistant.",
            owner="cx-platform@example.com",
            risk_tier="limited",
            task="chat-completion",
            framework="openai-compatible",
        )
        create(
            "endpoint",
            name="fraud-scoring",
            system="payments-fraud",
            model="fraud-detector",
            description="Real-time scoring endpoint behind the Stockade gateway.",
            owner="risk-ml@example.com",
            risk_tier="high",
            url="http://127.0.0.1:8701/v1/fraud/score",
        )
        move("system", "payments-fraud", "development", "validated", "staging", "production")
        move("dataset", "card-transactions", "development", "validated")
        move("model", "fraud-detector", "development", "validated", "staging", "production")
        move("model", "fraud-detector", "development", "validated", version="1.0.0")
        move("model", "fraud-detector", "staging", "production", version="1.0.0")
        move("model", "fraud-detector", "development", "validated", "staging", version="1.1.0")
        move("system", "support-assistant", "development")
        ws.audit.checkpoint(session)
    files = (dataset_path, *model_paths.values())
    return DemoWorkspace(True, folder, files)
