"""HDF5 files (legacy Keras `.h5` models and weights): the Keras JSON in the `model_config`
and `training_config` attributes, and links or storage that make HDF5 read other files.

h5py executes nothing, but the HDF5 C library can crash or loop on a corrupt file, so it
runs in a child process that answers in JSON: a crash or a hang there is a could-not-
inspect error, never a dead scan. Weights-only files (no `model_config`) come out clean.
"""

from __future__ import annotations

import atexit
import base64
import binascii
import contextlib
import io
import json
import multiprocessing.util
import os
import queue
import subprocess
import sys
import threading
from typing import IO, Any, ClassVar

from stockade.core.findings import Severity
from stockade.model.scan.formats.keras import MAX_JSON_BYTES, scan_keras_json
from stockade.model.scan.interface import Blob, ScanContext

__all__ = ["SCANNER", "HDF5Scanner", "inspect_hdf5", "serve", "signature_offset"]

RULE_EXTERNAL_LINK = "STK-HDF5-001"
RULE_EXTERNAL_STORAGE = "STK-HDF5-002"
RULE_VIRTUAL_SOURCE = "STK-HDF5-003"

_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_KERAS_ATTRIBUTES = ("model_config", "training_config")
_MAX_OBJECTS = 200_000
_MIN_SECONDS = 10.0
_BYTES_PER_SECOND = 20 << 20
_MAX_REPLY = 1 << 30


def signature_offset(data: bytes | memoryview) -> int | None:
    """Where the HDF5 superblock signature is: 0, 512, 1024, 2048, ... (after a user
    block), or None."""
    offset = 0
    size = len(data)
    while offset + len(_SIGNATURE) <= size:
        if bytes(data[offset : offset + len(_SIGNATURE)]) == _SIGNATURE:
            return offset
        offset = 512 if offset == 0 else offset * 2
    return None


class HDF5Scanner:
    """HDF5 by its superblock signature; Keras model JSON in the root attributes."""

    name: ClassVar[str] = "hdf5"

    def detect(self, blob: Blob) -> bool:
        return signature_offset(blob.data) is not None

    def scan(self, blob: Blob, ctx: ScanContext) -> None:
        # A whole file on disk is opened by path in the child; anything else goes as bytes.
        request: tuple[bytes, bytes | memoryview]
        if blob.member is None and _is_same_file(blob):
            request = (b"P", os.fsencode(os.path.abspath(blob.path)))
        else:
            request = (b"B", blob.data)  # written to the child's pipe without a copy
        timeout = max(_MIN_SECONDS, len(blob.data) / _BYTES_PER_SECOND)
        try:
            facts = _READER.ask(request, timeout)
        except _Failed as exc:
            ctx.error(blob, f"hdf5: {exc}")
            return
        _report(facts, blob, ctx)


def _report(facts: dict[str, Any], blob: Blob, ctx: ScanContext) -> None:
    """Turn the child's facts into findings; Keras JSON is scanned as such."""
    for name, (kind, value) in _items(facts, "attributes"):
        text: str | bytes = value
        if kind == "base64":
            try:
                text = base64.b64decode(value)
            except (binascii.Error, ValueError):
                ctx.error(blob, f"hdf5: garbled reply for attribute {name}")
                continue
        if text:
            scan_keras_json(text, blob, ctx, origin=f"attribute {name}")
    for name, target_file, target_path in _items(facts, "links"):
        ctx.report(
            blob,
            RULE_EXTERNAL_LINK,
            "HDF5 external link opens another file",
            Severity.HIGH,
            detail=f"/{name} links to {target_path} in {target_file!r}: following it opens "
            "that file",
            snippet=str(target_file),
            category="model-file-access",
        )
    for name, target, offset, size in _items(facts, "external"):
        ctx.report(
            blob,
            RULE_EXTERNAL_STORAGE,
            "HDF5 dataset stores its bytes in another file",
            Severity.HIGH,
            detail=f"/{name} reads {size} bytes at {offset} of {target!r}",
            snippet=str(target),
            category="model-file-access",
        )
    for name, target, source in _items(facts, "virtual"):
        ctx.report(
            blob,
            RULE_VIRTUAL_SOURCE,
            "HDF5 virtual dataset maps another file",
            Severity.HIGH,
            detail=f"/{name} maps {source} from {target!r}",
            snippet=str(target),
            category="model-file-access",
        )
    for problem in facts.get("problems", []):
        ctx.error(blob, f"hdf5: {problem}")


def _items(facts: dict[str, Any], key: str) -> list[Any]:
    value = facts.get(key, [])
    return list(value.items()) if isinstance(value, dict) else list(value)


def _is_same_file(blob: Blob) -> bool:
    """The blob is the whole of the file at its path (the child then opens it natively)."""
    try:
        return os.path.isfile(blob.path) and os.path.getsize(blob.path) == len(blob.data)
    except OSError:
        return False


# -- what runs in the child process ------------------------------------------------------


def inspect_hdf5(source: str | bytes) -> dict[str, Any]:
    """Read an HDF5 file (a path, or its bytes) with h5py and return JSON-ready facts: the
    Keras attributes' text, external links, external storage, virtual sources, and the
    problems met. Runs the HDF5 library in this process: call it in an isolated one."""
    import h5py

    facts: dict[str, Any] = {
        "attributes": {},
        "links": [],
        "external": [],
        "virtual": [],
        "problems": [],
    }
    opened: Any = source if isinstance(source, str) else _BytesReader(source)
    try:
        with h5py.File(opened, "r") as handle:
            for name in _KERAS_ATTRIBUTES:
                _read_attribute(handle, name, facts)
            _read_links(handle, facts)
            _read_datasets(handle, facts)
    except (OSError, RuntimeError, KeyError, ValueError, TypeError) as exc:
        facts["problems"].append(f"cannot read: {exc}")
    return facts


def _read_attribute(handle: Any, name: str, facts: dict[str, Any]) -> None:
    if name not in handle.attrs:
        return
    origin = f"attribute {name}"
    attribute = handle.attrs.get_id(name)
    points = attribute.get_space().get_simple_extent_npoints()
    if points > 1:
        facts["problems"].append(f"{origin} holds {points} values, not one JSON text")
        return
    if attribute.get_storage_size() > MAX_JSON_BYTES:
        facts["problems"].append(f"{origin} is over {MAX_JSON_BYTES} bytes")
        return
    try:
        value = handle.attrs[name]
    except (OSError, TypeError, ValueError) as exc:
        facts["problems"].append(f"cannot read {origin}: {exc}")
        return
    if hasattr(value, "item") and getattr(value, "size", 1) == 1:
        value = value.item()
    if isinstance(value, str):
        facts["attributes"][name] = ("text", value)
    elif isinstance(value, bytes):
        facts["attributes"][name] = ("base64", base64.b64encode(value).decode("ascii"))
    else:
        facts["problems"].append(f"{origin} is {type(value).__name__}, not JSON text")


def _read_links(handle: Any, facts: dict[str, Any]) -> None:
    from h5py import h5l

    seen = 0

    def visit(name: bytes, info: Any) -> object:
        nonlocal seen
        seen += 1
        if seen > _MAX_OBJECTS:
            return True  # stops the visit
        if info.type == h5l.TYPE_EXTERNAL:
            target_file, target_path = handle.id.links.get_val(name)
            facts["links"].append((_text(name), _text(target_file), _text(target_path)))
        return None

    handle.id.links.visit(visit, info=True)
    if seen > _MAX_OBJECTS:
        facts["problems"].append(f"more than {_MAX_OBJECTS} links")


def _read_datasets(handle: Any, facts: dict[str, Any]) -> None:
    from h5py import h5d, h5o

    names: list[bytes] = []

    def visit(name: bytes, info: Any) -> object:
        if info.type == h5o.TYPE_DATASET:
            names.append(name)
        return True if len(names) > _MAX_OBJECTS else None

    h5o.visit(handle.id, visit, info=True)
    if len(names) > _MAX_OBJECTS:
        facts["problems"].append(f"more than {_MAX_OBJECTS} datasets")
        del names[_MAX_OBJECTS:]
    for name in names:
        plist = h5d.open(handle.id, name).get_create_plist()
        for index in range(plist.get_external_count()):
            target, offset, size = plist.get_external(index)
            facts["external"].append((_text(name), _text(target), offset, size))
        if plist.get_layout() == h5d.VIRTUAL:
            for index in range(plist.get_virtual_count()):
                target = _text(plist.get_virtual_filename(index))
                if target != ".":  # "." is this same file
                    source = _text(plist.get_virtual_dsetname(index))
                    facts["virtual"].append((_text(name), target, source))


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


class _BytesReader(io.RawIOBase):
    """A read-only, seekable file over bytes, for h5py (no copy)."""

    def __init__(self, data: bytes) -> None:
        super().__init__()
        self._view = memoryview(data)
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self._view)}
        position = base[whence] + offset
        if position < 0:
            raise ValueError("negative seek position")
        self._pos = position
        return position

    def readinto(self, buffer: Any) -> int:
        start = min(self._pos, len(self._view))
        count = min(len(buffer), len(self._view) - start)
        buffer[:count] = self._view[start : start + count]
        self._pos = start + count
        return count


def serve() -> None:
    """The child's loop: a request (`P` + path or `B` + file bytes) on stdin, its facts
    as JSON on stdout, until stdin closes."""
    requests = os.fdopen(os.dup(0), "rb")
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # stray output from C code must not corrupt the replies
    while True:
        request = _read_frame(requests)
        if request is None:
            return
        kind, payload = request[:1], request[1:]
        source = os.fsdecode(payload) if kind == b"P" else payload
        try:
            facts = inspect_hdf5(source)
        except Exception as exc:  # reported to the parent, never a dead child
            facts = {"problems": [f"{type(exc).__name__}: {exc}"]}
        _write_frame(replies, json.dumps(facts).encode())


def _read_frame(stream: IO[bytes], limit: int | None = None) -> bytes | None:
    header = stream.read(8)
    if len(header) < 8:
        return None
    size = int.from_bytes(header, "little")
    if limit is not None and size > limit:
        return None
    body = stream.read(size)
    return body if len(body) == size else None


def _write_frame(stream: IO[bytes], *parts: bytes | memoryview) -> None:
    stream.write(sum(len(part) for part in parts).to_bytes(8, "little"))
    for part in parts:
        stream.write(part)
    stream.flush()


# -- the parent's side -------------------------------------------------------------------


class _Failed(Exception):
    """The reader crashed, hung, answered nonsense or could not be started."""


class _Reader:
    """One child process running the HDF5 library, started on first use and again after a
    crash or a hang. It is a plain subprocess (no re-import of the caller's main module,
    no fork of a threaded process); each process, pool workers too, has its own."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._child: subprocess.Popen[bytes] | None = None
        self._replies: queue.Queue[bytes | None] = queue.Queue()
        self._finalised_in: int | None = None

    def ask(self, request: tuple[bytes, bytes | memoryview], timeout: float) -> dict[str, Any]:
        """Send (`P`, path) or (`B`, file bytes); the facts, or `_Failed`."""
        with self._lock:
            child = self._child if self._child is not None else self._start()
            assert child.stdin is not None
            try:
                _write_frame(child.stdin, *request)
                reply = self._replies.get(timeout=timeout)
            except queue.Empty:
                self.stop()
                raise _Failed(f"the HDF5 library took longer than {timeout:.0f} s") from None
            except OSError:
                reply = None
            if reply is None:
                self.stop()
                code = child.returncode
                raise _Failed(f"the HDF5 library crashed reading this file (exit code {code})")
            try:
                facts = json.loads(reply)
            except ValueError:
                facts = None
            if not isinstance(facts, dict):
                self.stop()
                raise _Failed("the HDF5 reader answered nonsense")
            return facts

    def _start(self) -> subprocess.Popen[bytes]:
        self.stop()
        command = [sys.executable, "-c", f"from {__name__} import serve; serve()"]
        try:
            # Our own interpreter running our own module: no scanned content in the command.
            child = subprocess.Popen(  # noqa: S603
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
            )
        except OSError as exc:
            raise _Failed(f"cannot start the HDF5 reader process: {exc}") from None
        replies: queue.Queue[bytes | None] = queue.Queue()
        assert child.stdout is not None
        threading.Thread(
            target=_pump, args=(child.stdout, replies), name="stockade-hdf5", daemon=True
        ).start()
        self._child, self._replies = child, replies
        if self._finalised_in != os.getpid():
            # Pool workers skip atexit; multiprocessing's own exit hook runs this.
            multiprocessing.util.Finalize(self, self.stop, exitpriority=100)
            self._finalised_in = os.getpid()
        return child

    def stop(self) -> None:
        child, self._child = self._child, None
        if child is None:
            return
        if child.stdin is not None:
            with contextlib.suppress(OSError):
                child.stdin.close()  # the child's loop ends at end of input
        try:
            child.wait(timeout=1)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        if child.stdout is not None:
            child.stdout.close()

    def forget(self) -> None:
        """In a forked process: the reader belongs to the parent; start afresh later."""
        self._lock = threading.Lock()
        self._child = None
        self._replies = queue.Queue()
        self._finalised_in = None


def _pump(stream: IO[bytes], replies: queue.Queue[bytes | None]) -> None:
    """Hand each reply frame over; None when the child's output ends."""
    try:
        while True:
            frame = _read_frame(stream, _MAX_REPLY)
            if frame is None:
                break
            replies.put(frame)
    except (OSError, ValueError):
        pass
    replies.put(None)


_READER = _Reader()
atexit.register(_READER.stop)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_READER.forget)

SCANNER = HDF5Scanner()
