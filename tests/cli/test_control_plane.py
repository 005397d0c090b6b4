"""`stockade init --demo` and `stockade up` as real processes: the demo workspace, the REST API
over loopback HTTP, the admin token, and a clean stop on Ctrl-C."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

STOCKADE = str(Path(sys.executable).with_name("stockade"))


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STOCKADE_")}
    env.update(STOCKADE_HOME=str(home), **extra)
    return env


def _run(home: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [STOCKADE, *args], env=_env(home, **extra), capture_output=True, text=True, timeout=120
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def demo_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("demo") / "home"
    done = _run(home, "init", "--demo")
    assert done.returncode == 0, done.stderr
    assert "seeded the demo workspace" in done.stdout
    return home


def test_init_demo_builds_a_real_workspace(demo_home: Path) -> None:
    token_file = demo_home / "admin.token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert token_file.read_text().startswith("stk_")
    assert stat.S_IMODE(demo_home.stat().st_mode) == 0o700
    models = json.loads(_run(demo_home, "inventory", "list", "models", "-f", "json").stdout)
    assert {m["name"] for m in models} == {"fraud-detector", "support-llm"}
    versions = json.loads(
        _run(demo_home, "inventory", "versions", "model", "fraud-detector", "-f", "json").stdout
    )
    assert [(v["version"], v["lifecycle_state"]) for v in versions] == [
        ("1.0.0", "production"),
        ("1.1.0", "staging"),
    ]
    for version in versions:
        path = demo_home / "demo" / f"fraud-detector-{version['version']}.joblib"
        assert version["digest"] == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
        assert float(version["tags"]["roc_auc"]) > 0.6  # a real model that learned something
    dataset = json.loads(
        _run(
            demo_home, "inventory", "versions", "dataset", "card-transactions", "-f", "json"
        ).stdout
    )
    assert dataset[0]["row_count"] == 4000
    verify = _run(demo_home, "audit", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_init_is_idempotent(demo_home: Path) -> None:
    again = _run(demo_home, "init", "--demo")
    assert again.returncode == 0, again.stderr
    assert "seeded" not in again.stdout
    assert "admin token" not in again.stdout  # the existing token is kept, not re-issued


@pytest.fixture
def server(demo_home: Path) -> Iterator[tuple[subprocess.Popen[str], str, str]]:
    port = _free_port()
    proc = subprocess.Popen(
        [STOCKADE, "up", "--port", str(port), "--log-level", "warning"],
        env=_env(demo_home),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail(f"server did not start: {proc.communicate()[1]}")
    token = (demo_home / "admin.token").read_text().strip()
    yield proc, base, token
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_up_serves_the_api_and_stops_on_ctrl_c(
    server: tuple[subprocess.Popen[str], str, str],
) -> None:
    proc, base, token = server
    auth = {"Authorization": f"Bearer {token}"}
    models = httpx.get(f"{base}/api/v1/models", headers=auth, timeout=5)
    assert models.status_code == 200
    assert "fraud-detector" in {m["name"] for m in models.json()}
    for resource in ("systems", "datasets", "endpoints", "audit", "events", "tokens"):
        assert httpx.get(f"{base}/api/v1/{resource}", headers=auth, timeout=5).status_code == 200, (
            resource
        )
    denied = httpx.get(f"{base}/api/v1/models", timeout=5)
    assert denied.status_code == 401
    assert denied.json()["error"]["code"] == "unauthorized"
    spec = httpx.get(f"{base}/openapi.json", timeout=5).json()
    assert "/api/v1/models/{name}/versions" in spec["paths"]
    assert httpx.get(f"{base}/docs", timeout=5).status_code == 200

    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "http://127.0.0.1:" in out
    assert token in out
    assert "stopped" in out
    assert "Traceback" not in err


def test_up_refuses_a_busy_port(demo_home: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = _run(demo_home, "up", "--port", str(port))
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr


def test_monitor_tail_follows_new_events(demo_home: Path) -> None:
    proc = subprocess.Popen(
        [STOCKADE, "monitor", "tail", "--count", "1", "--interval", "0.2"],
        env=_env(demo_home),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        assert "following events" in proc.stderr.readline()  # tail has its starting point
        assert (
            _run(demo_home, "monitor", "emit", "canary.promoted", "--subject", "model:x").returncode
            == 0
        )
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert json.loads(out)["kind"] == "canary.promoted"


def test_version_and_help_list_every_phase(demo_home: Path) -> None:
    assert _run(demo_home, "--version").stdout.startswith("stockade ")
    help_text = _run(demo_home, "--help").stdout
    for group in (
        "data",
        "model",
        "eval",
        "gateway",
        "monitor",
        "retire",
        "govern",
        "inventory",
        "audit",
        "keys",
    ):
        assert group in help_text, group
