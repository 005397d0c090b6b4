"""Benchmark of the control-plane foundation beside plain baselines run on the same inputs:
audit appends, verification and proofs, envelope encryption, token auth and the REST API.

Run `.venv/bin/python bench/foundation/run.py [--json FILE]`; README.md beside it explains
each number. Everything it creates (temp dirs, a PostgreSQL schema) is removed at the end.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import hashlib
import json
import math
import multiprocessing
import os
import platform
import resource
import secrets
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cryptography
import httpx
import psycopg
import uvicorn
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import select, text
from sqlalchemy.engine import make_url

from stockade.api.app import create_app
from stockade.core import inventory, merkle
from stockade.core.config import Settings
from stockade.core.envelope import decrypt_file, encrypt_file
from stockade.core.errors import StockadeError
from stockade.core.keys import KeyStore
from stockade.core.kms import LocalKMS
from stockade.core.tables import AuditEntry
from stockade.core.tokens import authenticate, create_token
from stockade.core.workspace import Workspace

__all__ = ["Baseline", "Result", "Skipped", "main"]

MIB = 1 << 20
MB = 1_000_000
DEFAULT_POSTGRES_URL = os.environ.get(
    "STOCKADE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
SECTIONS = ("audit", "verify", "envelope", "api")
_PLAIN_TABLE = "bench_plain_entries"
_ACTOR = "bench:foundation"
_PIECE = 64 * MIB  # the one-shot AESGCM baseline's piece size
_WARMUP = 50


# -- records ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Baseline:
    """A peer doing the same work on the same input; `ratio` is Stockade's cost (time or
    memory) divided by the baseline's, so 2.0 means Stockade takes twice as long."""

    name: str
    value: float
    ratio: float


@dataclass(frozen=True)
class Result:
    """One Stockade figure in `unit` (`/s`, `MB/s`, `ms`, `s`, `MiB`), with its baselines."""

    section: str
    name: str
    value: float
    unit: str
    baselines: tuple[Baseline, ...] = ()
    note: str = ""


@dataclass(frozen=True)
class Skipped:
    """A measurement that could not run here, and why."""

    section: str
    name: str
    reason: str


@dataclass(frozen=True)
class Target:
    """A migrated workspace on one backend: SQLite in a temp home, or a PostgreSQL schema."""

    backend: str
    home: Path
    url: str
    workspace: Workspace = field(repr=False)


def _settings(home: Path, url: str) -> Settings:
    # Explicit values beat STOCKADE_* variables, so the caller's environment cannot redirect
    # the benchmark to a real workspace.
    return Settings(home=home, database_url=url, redis_url=None, audit_checkpoint_interval=0)


def _open_target(backend: str, home: Path, url: str) -> Target:
    home.mkdir(parents=True, exist_ok=True)
    workspace = Workspace.open(_settings(home, url), require_migrated=False)
    workspace.database.upgrade()
    return Target(backend, home, url, workspace)


# -- small helpers ----------------------------------------------------------------------


def _log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def _percentile(samples: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(samples)
    rank = min(len(ordered), max(1, math.ceil(fraction * len(ordered))))
    return ordered[rank - 1]


def _rate_ratio(stockade_rate: float, baseline_rate: float) -> float:
    """Cost ratio of two rates: how many times longer Stockade takes for the same work."""
    return baseline_rate / stockade_rate


def _details(i: int) -> dict[str, Any]:
    """Audit details shaped like an inventory transition (an entry of about 400 bytes)."""
    return {
        "name": f"fraud-model-{i % 97}",
        "from": "validated",
        "to": "staging",
        "reason": "evaluation passed; owner sign-off recorded",
        "gates": ["model.signed", "eval.robustness", "data.pii-clean"],
        "version": f"1.{i % 13}.{i % 7}",
    }


def _append_one(target: Target, i: int) -> None:
    with target.workspace.session() as session:
        target.workspace.audit.append(
            session,
            actor=_ACTOR,
            action="model.transition",
            subject=f"model:fraud-model-{i % 97}",
            details=_details(i),
        )


def _current_rss() -> int | None:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")


def _peak_rss() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _best(repeat: int, run: Callable[[], None], after: Callable[[], None] | None = None) -> float:
    """The fastest of `repeat` runs, in seconds; `after` (untimed) cleans up after each."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
        if after is not None:
            after()
    return best


# -- 1. audit appends -------------------------------------------------------------------


def _create_plain_table(target: Target) -> None:
    blob = "BYTEA" if target.backend == "postgresql" else "BLOB"
    with target.workspace.session() as session:
        session.execute(text(f"DROP TABLE IF EXISTS {_PLAIN_TABLE}"))
        session.execute(
            text(f"CREATE TABLE {_PLAIN_TABLE} (id BIGINT PRIMARY KEY, entry {blob} NOT NULL)")
        )


def _entry_bytes(target: Target, start: int, stop: int) -> list[bytes]:
    with target.workspace.session() as session:
        rows = session.execute(
            select(AuditEntry.entry)
            .where(AuditEntry.idx >= start, AuditEntry.idx < stop)
            .order_by(AuditEntry.idx)
        )
        return [bytes(row.entry) for row in rows]


def bench_appends(target: Target, count: int, rounds: int) -> list[Result]:
    """`count` appends, one per committed transaction, interleaved in `rounds` with plain
    INSERTs of the very bytes those appends wrote, through the same engine and session."""
    _create_plain_table(target)
    insert = text(f"INSERT INTO {_PLAIN_TABLE} (id, entry) VALUES (:id, :entry)")
    database = target.workspace.database
    with target.workspace.session() as session:
        first = target.workspace.audit.size(session)
    for i in range(_WARMUP):  # the head row, the signing key, the statement caches
        _append_one(target, first + i)
    for i, data in enumerate(_entry_bytes(target, first, first + _WARMUP)):
        with database.session() as session:
            session.execute(insert, {"id": -1 - i, "entry": data})

    audit_times: list[float] = []
    plain_times: list[float] = []
    per_round = max(1, count // rounds)
    plain_id = 0
    for _ in range(rounds):
        with target.workspace.session() as session:
            start = target.workspace.audit.size(session)
        for i in range(start, start + per_round):
            began = time.perf_counter()
            _append_one(target, i)
            audit_times.append(time.perf_counter() - began)
        for data in _entry_bytes(target, start, start + per_round):
            began = time.perf_counter()
            with database.session() as session:
                session.execute(insert, {"id": plain_id, "entry": data})
            plain_times.append(time.perf_counter() - began)
            plain_id += 1
    if len(plain_times) != len(audit_times):
        raise RuntimeError("the baseline did not insert one row per audit entry")

    audit_rate = len(audit_times) / sum(audit_times)
    plain_rate = len(plain_times) / sum(plain_times)
    latency = (
        f"p50 {_percentile(audit_times, 0.5) * 1e3:.2f} ms, "
        f"p99 {_percentile(audit_times, 0.99) * 1e3:.2f} ms; baseline "
        f"p50 {_percentile(plain_times, 0.5) * 1e3:.2f} ms, "
        f"p99 {_percentile(plain_times, 0.99) * 1e3:.2f} ms"
    )
    with target.workspace.session() as session:
        session.execute(text(f"DROP TABLE {_PLAIN_TABLE}"))
    return [
        Result(
            "audit",
            f"AuditLog.append, 1/tx, {target.backend}",
            audit_rate,
            "/s",
            (
                Baseline(
                    "plain INSERT, same bytes, 1/tx",
                    plain_rate,
                    _rate_ratio(audit_rate, plain_rate),
                ),
            ),
            note=f"{len(audit_times)} each; {latency}",
        )
    ]


# -- 2. verification and proofs ---------------------------------------------------------


def _fill(target: Target, entries: int, batch: int = 1000) -> int:
    """Append until the log holds `entries` (batches per transaction), then checkpoint."""
    audit = target.workspace.audit
    with target.workspace.session() as session:
        size = audit.size(session)
    while size < entries:
        with target.workspace.session() as session:
            for i in range(size, min(entries, size + batch)):
                audit.append(
                    session,
                    actor=_ACTOR,
                    action="model.transition",
                    subject=f"model:fraud-model-{i % 97}",
                    details=_details(i),
                )
        size = min(entries, size + batch)
    with target.workspace.session() as session:
        audit.checkpoint(session)
        return audit.size(session)


def _verify_in_fresh_process(home: str, url: str, proof_repeat: int) -> dict[str, Any]:
    """Runs in a spawned process, so its peak RSS belongs to verification alone."""
    workspace = Workspace.open(_settings(Path(home), url))
    audit = workspace.audit
    try:
        with workspace.session() as session:
            size = audit.size(session)
            head_root = audit.root(session)
        rss_before = _current_rss()
        began = time.perf_counter()
        with workspace.session() as session:
            verification = audit.verify(session)
        verify_s = time.perf_counter() - began
        rss_peak = _peak_rss()
        if not verification.ok or verification.size != size:
            raise RuntimeError(f"the benchmark log does not verify: {verification.problems[:3]}")

        tracemalloc.start()
        with workspace.session() as session:
            audit.verify(session)
        traced_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()

        index, old_size = size // 2, size // 2
        inclusion_s, consistency_s = [], []
        for _ in range(proof_repeat):
            began = time.perf_counter()
            with workspace.session() as session:
                proved = audit.inclusion_proof(session, index)
            inclusion_s.append(time.perf_counter() - began)
            if not merkle.verify_inclusion(proved.proof, proved.record.leaf_hash, head_root):
                raise RuntimeError("an inclusion proof did not verify")
            began = time.perf_counter()
            with workspace.session() as session:
                consistent = audit.consistency_proof(session, old_size)
            consistency_s.append(time.perf_counter() - began)
            if not merkle.verify_consistency(
                consistent.proof, consistent.old_root, consistent.new_root
            ):
                raise RuntimeError("a consistency proof did not verify")

        # Floors: one SELECT of the entry bytes, then hashing them in memory.
        began = time.perf_counter()
        with workspace.session() as session:
            entries = [
                bytes(e) for e in session.scalars(select(AuditEntry.entry).order_by(AuditEntry.idx))
            ]
        select_s = time.perf_counter() - began
        entry_bytes = sum(len(e) for e in entries)
        tracemalloc.start()
        began = time.perf_counter()
        leaves = [hashlib.sha256(b"\x00" + e).digest() for e in entries]
        root = merkle.tree_hash(leaves)
        hash_s = time.perf_counter() - began
        hash_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        if root != head_root:
            raise RuntimeError("the in-memory root differs from the log's root")

        floor_inclusion = _best(
            proof_repeat, lambda: merkle.inclusion_proof(leaves, index, len(leaves))
        )
        floor_consistency = _best(
            proof_repeat, lambda: merkle.consistency_proof(leaves, old_size, len(leaves))
        )
        return {
            "size": size,
            "verify_s": verify_s,
            "rss_before": rss_before,
            "rss_peak": rss_peak,
            "traced_peak": traced_peak,
            "inclusion_s": sorted(inclusion_s)[len(inclusion_s) // 2],
            "consistency_s": sorted(consistency_s)[len(consistency_s) // 2],
            "select_s": select_s,
            "hash_s": hash_s,
            "hash_peak": hash_peak,
            "entry_bytes": entry_bytes,
            "floor_inclusion_s": floor_inclusion,
            "floor_consistency_s": floor_consistency,
        }
    finally:
        workspace.close()


def bench_verify(target: Target, entries: int, proof_repeat: int) -> list[Result]:
    size = _fill(target, entries)
    target.workspace.database.dispose()  # the child opens its own connections
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        got = pool.submit(
            _verify_in_fresh_process, str(target.home), target.url, proof_repeat
        ).result()
    if got["size"] != size:
        raise RuntimeError("the log changed size while it was measured")
    where = f"{size:,}, {target.backend}"
    results = [
        Result(
            "verify",
            f"AuditLog.verify, {where}",
            got["verify_s"],
            "s",
            (
                Baseline(
                    "hashlib + tree_hash, in memory",
                    got["hash_s"],
                    got["verify_s"] / got["hash_s"],
                ),
                Baseline(
                    "one SELECT of the entry bytes",
                    got["select_s"],
                    got["verify_s"] / got["select_s"],
                ),
            ),
            note=f"{size / got['verify_s']:,.0f} entries/s; entries hold "
            f"{got['entry_bytes'] / MIB:.1f} MiB",
        ),
    ]
    floor_memory = got["entry_bytes"] + got["hash_peak"]
    results.append(
        Result(
            "verify",
            f"verify tracemalloc peak, {where}",
            got["traced_peak"] / MIB,
            "MiB",
            (
                Baseline(
                    "in memory: entries + leaf hashes",
                    floor_memory / MIB,
                    got["traced_peak"] / floor_memory,
                ),
            ),
        )
    )
    if got["rss_before"] is not None:
        growth = max(0, got["rss_peak"] - got["rss_before"])
        results.append(
            Result(
                "verify",
                f"verify peak RSS growth, {where}",
                growth / MIB,
                "MiB",
                note=f"fresh process; peak RSS {got['rss_peak'] / MIB:.1f} MiB "
                f"of which {got['rss_before'] / MIB:.1f} MiB before verify",
            )
        )
    for label, key, floor in (
        ("inclusion_proof", "inclusion_s", "floor_inclusion_s"),
        ("consistency_proof", "consistency_s", "floor_consistency_s"),
    ):
        results.append(
            Result(
                "verify",
                f"{label}({size // 2:,}), {where}",
                got[key] * 1e3,
                "ms",
                (Baseline(f"merkle.{label}, in memory", got[floor] * 1e3, got[key] / got[floor]),),
                note=f"median of {proof_repeat}",
            )
        )
    return results


# -- 3. envelope encryption -------------------------------------------------------------


def _write_random(path: Path, size: int) -> None:
    with path.open("wb") as handle:
        left = size
        while left:
            piece = min(left, 8 * MIB)
            handle.write(os.urandom(piece))
            left -= piece
        handle.flush()
        os.fsync(handle.fileno())


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(8 * MIB):
            digest.update(chunk)
    return digest.hexdigest()


def _aesgcm_pieces(src: Path, dst: Path, key: bytes, *, decrypt: bool) -> None:
    """One-shot AESGCM per 64 MiB piece (a counter nonce each), written out and fsynced."""
    aead = AESGCM(key)
    piece = _PIECE + 16 if decrypt else _PIECE
    with src.open("rb", buffering=0) as source, dst.open("wb", buffering=0) as out:
        counter = 0
        while data := source.read(piece):
            nonce = counter.to_bytes(12, "big")
            out.write(
                aead.decrypt(nonce, data, None) if decrypt else aead.encrypt(nonce, data, None)
            )
            counter += 1
        os.fsync(out.fileno())


def _run(command: list[str]) -> None:
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _envelope_folder(stack: contextlib.ExitStack, chosen: Path | None, size: int) -> Path:
    """`chosen`, else tmpfs (/dev/shm) when it has room for the four files at once, else
    the system temp dir: on tmpfs fsync is free, so disk noise does not hide the ratios."""
    parent = chosen
    if parent is None:
        shm = Path("/dev/shm")
        if shm.is_dir() and os.access(shm, os.W_OK) and shutil.disk_usage(shm).free > 5 * size:
            parent = shm
    return Path(
        stack.enter_context(tempfile.TemporaryDirectory(prefix="stockade-bench-", dir=parent))
    )


def _filesystem(folder: Path) -> str:
    """The type of the filesystem holding `folder` (Linux), for the notes."""
    best, kind = "", "unknown filesystem"
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) > 2 and str(folder).startswith(parts[1]) and len(parts[1]) > len(best):
                best, kind = parts[1], parts[2]
    return kind


def bench_envelope(folder: Path, size_mib: int, repeat: int) -> list[Result | Skipped]:
    size = size_mib * MIB
    plain, sealed, opened = folder / "plain.bin", folder / "plain.env", folder / "opened.bin"
    other, other_back = folder / "baseline.out", folder / "baseline.back"
    _log(f"envelope: writing {size_mib} MiB of random bytes")
    _write_random(plain, size)
    expected = _sha256_file(plain)  # also warms the page cache for the first reader
    kms = LocalKMS(KeyStore(folder / "keys"))
    kms.create_kek("bench")

    def unlink(path: Path) -> Callable[[], None]:
        return lambda: path.unlink(missing_ok=True)

    _log("envelope: encrypt_file / decrypt_file")
    encrypt_s = _best(repeat, lambda: encrypt_file(plain, sealed, kms, "bench"))
    decrypt_s = _best(repeat, lambda: decrypt_file(sealed, opened, kms))
    if _sha256_file(opened) != expected:
        raise RuntimeError("decrypt_file did not give back the plaintext")
    opened.unlink()
    overhead = sealed.stat().st_size - size

    def rate(seconds: float) -> float:
        return size / seconds / MB

    encrypt_base: list[Baseline] = []
    decrypt_base: list[Baseline] = []
    skipped: list[Result | Skipped] = []

    def add(name: str, enc_s: float, dec_s: float) -> None:
        encrypt_base.append(Baseline(name, rate(enc_s), encrypt_s / enc_s))
        decrypt_base.append(Baseline(name, rate(dec_s), decrypt_s / dec_s))

    cat = shutil.which("cat")
    if cat:
        _log("envelope: cat")
        add(
            "cat > /dev/null (read floor)",
            _best(repeat, lambda: _run([cat, str(plain)])),
            _best(repeat, lambda: _run([cat, str(sealed)])),
        )
    else:
        skipped.append(Skipped("envelope", "cat baseline", "no cat on PATH"))

    sha256sum = shutil.which("sha256sum")
    if sha256sum:
        _log("envelope: sha256sum")
        add(
            "sha256sum",
            _best(repeat, lambda: _run([sha256sum, str(plain)])),
            _best(repeat, lambda: _run([sha256sum, str(sealed)])),
        )
    else:
        skipped.append(Skipped("envelope", "sha256sum baseline", "no sha256sum on PATH"))

    openssl = shutil.which("openssl")
    if openssl:
        _log("envelope: openssl enc -aes-256-ctr")
        key, iv = secrets.token_hex(32), secrets.token_hex(16)

        def openssl_enc(src: Path, dst: Path, *flags: str) -> Callable[[], None]:
            def go() -> None:
                _run(
                    [
                        openssl,
                        "enc",
                        *flags,
                        "-aes-256-ctr",
                        "-K",
                        key,
                        "-iv",
                        iv,
                        "-in",
                        str(src),
                        "-out",
                        str(dst),
                    ]
                )
                _fsync(dst)

            return go

        enc_s = _best(repeat, openssl_enc(plain, other, "-e"))
        dec_s = _best(repeat, openssl_enc(other, other_back, "-d"), unlink(other_back))
        add("openssl enc -aes-256-ctr", enc_s, dec_s)
        other.unlink()
    else:
        skipped.append(Skipped("envelope", "openssl baseline", "no openssl binary on PATH"))

    _log("envelope: AESGCM in 64 MiB pieces")
    gcm_key = AESGCM.generate_key(bit_length=256)
    enc_s = _best(repeat, lambda: _aesgcm_pieces(plain, other, gcm_key, decrypt=False))
    dec_s = _best(
        repeat, lambda: _aesgcm_pieces(other, other_back, gcm_key, decrypt=True), unlink(other_back)
    )
    add("AESGCM one-shot, 64 MiB pieces", enc_s, dec_s)
    other.unlink()
    sealed.unlink()
    plain.unlink()

    note = (
        f"{size_mib} MiB, best of {repeat}, files on {_filesystem(folder)} ({folder.parent}); "
        "every writer fsyncs its output"
    )
    return [
        Result(
            "envelope",
            "encrypt_file (LocalKMS)",
            rate(encrypt_s),
            "MB/s",
            tuple(encrypt_base),
            note=f"{note}; envelope +{overhead:,} bytes",
        ),
        Result(
            "envelope",
            "decrypt_file (LocalKMS)",
            rate(decrypt_s),
            "MB/s",
            tuple(decrypt_base),
            note=note,
        ),
        *skipped,
    ]


# -- 4. token authentication and the REST API -------------------------------------------


@contextlib.contextmanager
def _serve(workspace: Workspace) -> Iterator[str]:
    """The control-plane app under uvicorn on a free 127.0.0.1 port, in a thread."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(workspace), log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        if not server.started:
            raise RuntimeError("uvicorn did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def bench_api(target: Target, calls: int, requests: int, models: int) -> list[Result]:
    workspace = target.workspace
    with workspace.session() as session:
        issued, _ = create_token(
            session, workspace.audit, name="bench", role="auditor", actor=_ACTOR
        )
        kind = inventory.KINDS["model"]
        for i in range(models):
            spec = inventory.ModelCreate(
                name=f"model-{i:03d}",
                owner="ml-platform",
                task="classification",
                framework="sklearn",
                tags={"team": "fraud"},
            )
            inventory.create(session, workspace.audit, kind, spec, actor=_ACTOR)
    token = issued.token

    _log(f"api: {calls} authenticate calls")
    call_s: list[float] = []
    tx_s: list[float] = []
    for n in range(_WARMUP + calls):
        opened = time.perf_counter()
        with workspace.session() as session:
            began = time.perf_counter()
            principal = authenticate(session, token)
            called = time.perf_counter() - began
        closed = time.perf_counter() - opened
        if principal.token_id != issued.token_id:
            raise RuntimeError("authenticate returned another principal")
        if n >= _WARMUP:
            call_s.append(called)
            tx_s.append(closed)

    _log(f"api: {requests} GET /api/v1/models over uvicorn")
    request_s: list[float] = []
    with (
        _serve(workspace) as url,
        httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30.0
        ) as client,
    ):
        for n in range(_WARMUP + requests):
            began = time.perf_counter()
            response = client.get("/api/v1/models")
            elapsed = time.perf_counter() - began
            if response.status_code != 200 or len(response.json()) != models:
                raise RuntimeError(f"GET /api/v1/models answered {response.status_code}")
            if n >= _WARMUP:
                request_s.append(elapsed)

    def latency(samples: Sequence[float]) -> str:
        return (
            f"p50 {_percentile(samples, 0.5) * 1e3:.3f} ms, "
            f"p99 {_percentile(samples, 0.99) * 1e3:.3f} ms"
        )

    return [
        Result(
            "api",
            f"tokens.authenticate, {target.backend}",
            _percentile(call_s, 0.5) * 1e3,
            "ms",
            note=f"figure is p50; {latency(call_s)}; {calls} calls",
        ),
        Result(
            "api",
            f"authenticate + its transaction, {target.backend}",
            _percentile(tx_s, 0.5) * 1e3,
            "ms",
            note=f"figure is p50; {latency(tx_s)}",
        ),
        Result(
            "api",
            f"GET /api/v1/models ({models} models)",
            len(request_s) / sum(request_s),
            "/s",
            note=f"uvicorn thread; {latency(request_s)}; {requests} requests, "
            "1 keep-alive client in the same process",
        ),
    ]


# -- PostgreSQL -------------------------------------------------------------------------


def _plain_postgres(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _postgres_problem(url: str) -> str | None:
    try:
        with psycopg.connect(_plain_postgres(url), connect_timeout=3):
            return None
    except psycopg.Error as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return f"PostgreSQL unavailable at {make_url(url)!r}: {reason}"


@contextlib.contextmanager
def _postgres_schema(url: str) -> Iterator[str]:
    """A URL to a throwaway schema, dropped (with everything in it) afterwards."""
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_plain_postgres(url), autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield (
            make_url(url)
            .update_query_dict({"options": f"-csearch_path={schema}"})
            .render_as_string(hide_password=False)
        )
    finally:
        with psycopg.connect(_plain_postgres(url), autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


# -- machine facts, table, JSON ---------------------------------------------------------


def _machine(postgres_url: str | None) -> dict[str, Any]:
    from cryptography.hazmat.backends.openssl import backend

    cpu = platform.processor()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    facts: dict[str, Any] = {
        "nproc": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "sqlite": sqlite3.sqlite_version,
        "cryptography": f"{cryptography.__version__} ({backend.openssl_version_text()})",
        "openssl_binary": None,
        "postgresql": None,
    }
    openssl = shutil.which("openssl")
    if openssl:
        facts["openssl_binary"] = subprocess.run(
            [openssl, "version"], capture_output=True, text=True, check=False
        ).stdout.strip()
    if postgres_url is not None:
        with psycopg.connect(_plain_postgres(postgres_url)) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            facts["postgresql"] = row[0] if row else None
    return facts


def _format(value: float, unit: str) -> str:
    if unit in ("/s", "MB/s"):
        return f"{value:,.0f} {unit}"
    if unit == "ms":
        return f"{value:.3f} ms" if value < 10 else f"{value:,.1f} ms"
    if unit == "s":
        return f"{value:.3f} s"
    return f"{value:,.1f} {unit}"


def render(machine: dict[str, Any], results: Sequence[Result | Skipped]) -> str:
    """The compact table: Stockade's figure, each baseline's, and the cost ratio."""
    lines = [
        "Stockade foundation bench: "
        + ", ".join(
            f"{k} {machine[k]}"
            for k in ("nproc", "cpu", "python", "sqlite", "postgresql")
            if machine.get(k)
        ),
        "ratio = Stockade's time (or memory) / the baseline's for the same work; "
        "2.00x = twice as slow",
        "",
    ]
    rows: list[tuple[str, str, str, str, str, str]] = [
        ("section", "measurement", "stockade", "baseline", "value", "ratio")
    ]
    notes: list[str] = []
    for result in results:
        if isinstance(result, Skipped):
            rows.append((result.section, result.name, "skipped", "(see notes)", "", ""))
            notes.append(f"  {result.name}: skipped, {' '.join(result.reason.split())}")
            continue
        first = _format(result.value, result.unit)
        if not result.baselines:
            rows.append((result.section, result.name, first, "-", "", ""))
        for n, base in enumerate(result.baselines):
            rows.append(
                (
                    result.section if n == 0 else "",
                    result.name if n == 0 else "",
                    first if n == 0 else "",
                    base.name,
                    _format(base.value, result.unit),
                    f"{base.ratio:.2f}x",
                )
            )
        if result.note:
            notes.append(f"  {result.name}: {result.note}")
    widths = [max(len(row[i]) for row in rows) for i in range(6)]
    right = {2, 4, 5}
    for row in rows:
        cells = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    if notes:
        lines += ["", "notes:", *notes]
    return "\n".join(lines)


# -- main -------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Measure Stockade's control-plane foundation beside plain baselines.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help=f"comma-separated subset of {', '.join(SECTIONS)}",
    )
    parser.add_argument(
        "--appends", type=int, default=2000, help="audit appends (and baseline INSERTs) per backend"
    )
    parser.add_argument(
        "--rounds", type=int, default=4, help="rounds the appends and INSERTs alternate in"
    )
    parser.add_argument(
        "--audit-entries", type=int, default=20_000, help="log size for verify and proofs"
    )
    parser.add_argument("--proof-repeat", type=int, default=5, help="proof runs (median)")
    parser.add_argument("--size-mib", type=int, default=512, help="file size for envelope")
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs of each envelope measurement (best kept)"
    )
    parser.add_argument("--auth-calls", type=int, default=2000, help="authenticate calls")
    parser.add_argument("--requests", type=int, default=2000, help="REST requests")
    parser.add_argument("--models", type=int, default=20, help="models GET /api/v1/models lists")
    parser.add_argument(
        "--postgres-url",
        default=DEFAULT_POSTGRES_URL,
        help="server and database for the throwaway schema (STOCKADE_TEST_POSTGRES_URL)",
    )
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    parser.add_argument(
        "--tmp-dir",
        type=Path,
        default=None,
        help="where the workspaces go (default: the system temp dir)",
    )
    parser.add_argument(
        "--envelope-dir",
        type=Path,
        default=None,
        help="where the envelope files go, e.g. a disk to include its write speed and fsync "
        "(default: /dev/shm when it has room, else the system temp dir)",
    )
    parser.add_argument(
        "--json", type=Path, default=None, metavar="FILE", help="also write the results as JSON"
    )
    return parser


def _check(args: argparse.Namespace) -> list[str]:
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        raise SystemExit(f"error: unknown sections {', '.join(unknown)}")
    for name in (
        "appends",
        "rounds",
        "audit_entries",
        "proof_repeat",
        "size_mib",
        "repeat",
        "auth_calls",
        "requests",
        "models",
    ):
        if getattr(args, name) < 1:
            raise SystemExit(f"error: --{name.replace('_', '-')} must be at least 1")
    if args.appends < args.rounds:
        raise SystemExit("error: --appends must be at least --rounds")
    return sections


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    sections = _check(args)
    started = time.perf_counter()
    results: list[Result | Skipped] = []
    postgres_url: str | None = None
    if not args.no_postgres and {"audit", "verify"} & set(sections):
        problem = _postgres_problem(args.postgres_url)
        if problem:
            results.append(Skipped("audit", "PostgreSQL (audit and verify)", problem))
            _log(f"skipping PostgreSQL: {problem}")
        else:
            postgres_url = args.postgres_url
    machine = _machine(postgres_url)

    with contextlib.ExitStack() as stack:
        folder = Path(
            stack.enter_context(
                tempfile.TemporaryDirectory(prefix="stockade-bench-", dir=args.tmp_dir)
            )
        )
        targets: list[Target] = []
        if {"audit", "verify"} & set(sections):
            home = folder / "sqlite"
            targets.append(_open_target("sqlite", home, f"sqlite:///{home / 'stockade.db'}"))
            if postgres_url is not None:
                url = stack.enter_context(_postgres_schema(postgres_url))
                targets.append(_open_target("postgresql", folder / "postgresql", url))
        for target in targets:
            stack.callback(target.workspace.close)
        if "audit" in sections:
            for target in targets:
                _log(f"audit: {args.appends} appends and INSERTs on {target.backend}")
                results += bench_appends(target, args.appends, args.rounds)
        if "verify" in sections:
            for target in targets:
                _log(f"verify: {args.audit_entries:,} entries on {target.backend}")
                results += bench_verify(target, args.audit_entries, args.proof_repeat)
        if "envelope" in sections:
            envelope_dir = _envelope_folder(stack, args.envelope_dir, args.size_mib * MIB)
            results += bench_envelope(envelope_dir, args.size_mib, args.repeat)
        if "api" in sections:
            home = folder / "control-plane"
            control = _open_target("sqlite", home, f"sqlite:///{home / 'stockade.db'}")
            stack.callback(control.workspace.close)
            results += bench_api(control, args.auth_calls, args.requests, args.models)

    elapsed = time.perf_counter() - started
    print(render(machine, results))
    print(f"\ntotal {elapsed:.0f} s")
    if args.json is not None:
        report = {
            "machine": machine,
            "settings": {
                **{k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                "postgres_url": make_url(args.postgres_url).render_as_string(hide_password=True),
            },
            "elapsed_s": elapsed,
            "results": [
                {"kind": "skipped" if isinstance(r, Skipped) else "result", **asdict(r)}
                for r in results
            ],
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (StockadeError, RuntimeError, OSError) as exc:
        message = exc.message if isinstance(exc, StockadeError) else str(exc)
        print(f"error: {message}", file=sys.stderr)
        sys.exit(1)
