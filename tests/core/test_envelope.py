"""Envelope encryption: round trips of any size and chunking, and every kind of tampering
(bit flips, truncation, extension, reordering, splicing, wrong associated data, a destroyed
key) fails with `DecryptionFailed` and never yields wrong plaintext or a half-written file."""

from __future__ import annotations

import hashlib
import io
import os
import random
import stat
import tracemalloc
from pathlib import Path
from typing import BinaryIO

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stockade.core.envelope import (
    DEFAULT_CHUNK_SIZE,
    MAGIC,
    MAX_CHUNK_SIZE,
    TAG_BYTES,
    DecryptionFailed,
    EnvelopeHeader,
    decrypt_bytes,
    decrypt_file,
    decrypt_stream,
    encrypt_bytes,
    encrypt_file,
    encrypt_stream,
    read_header,
)
from stockade.core.errors import InvalidInput, NotFound
from stockade.core.keys import KeyStore
from stockade.core.kms import LocalKMS

CHUNK = 16


@pytest.fixture(scope="module")
def kms(tmp_path_factory: pytest.TempPathFactory) -> LocalKMS:
    local = LocalKMS(KeyStore(tmp_path_factory.mktemp("envelope") / "keys"))
    local.create_kek("primary")
    local.create_kek("secondary")
    return local


def _seeded(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def _chunks(sealed: bytes, header: EnvelopeHeader) -> list[bytes]:
    """The sealed chunks of an envelope (for tests that move them around)."""
    body = sealed[header.length :]
    step = header.chunk_size + TAG_BYTES
    return [body[i : i + step] for i in range(0, len(body), step)]


def _flip(blob: bytes, bit: int) -> bytes:
    altered = bytearray(blob)
    altered[bit // 8] ^= 1 << (bit % 8)
    return bytes(altered)


# -- round trips --------------------------------------------------------------------------

plaintexts = st.one_of(
    st.binary(max_size=600),
    st.builds(_seeded, st.integers(0, 2**32), st.integers(0, 200_000)),
)
chunk_sizes = st.one_of(
    st.just(1), st.integers(2, 64), st.integers(65, 70_000), st.just(DEFAULT_CHUNK_SIZE)
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plaintext=plaintexts, chunk_size=chunk_sizes, associated=st.binary(max_size=80))
def test_round_trip(kms: LocalKMS, plaintext: bytes, chunk_size: int, associated: bytes) -> None:
    if chunk_size < 8:
        plaintext = plaintext[:20_000]  # one AES-GCM call per byte: keep the example quick
    sealed = encrypt_bytes(
        plaintext, kms, "primary", associated_data=associated, chunk_size=chunk_size
    )
    header = read_header(io.BytesIO(sealed))
    chunks = max(1, -(-len(plaintext) // chunk_size))
    assert len(sealed) == header.length + len(plaintext) + chunks * TAG_BYTES
    assert decrypt_bytes(sealed, kms, associated_data=associated) == plaintext


def test_header_describes_the_envelope(kms: LocalKMS, tmp_path: Path) -> None:
    source = tmp_path / "model.bin"
    source.write_bytes(b"x" * 100)
    written = encrypt_file(source, tmp_path / "model.enc", kms, "primary", chunk_size=4096)
    header = read_header(tmp_path / "model.enc")
    assert header == written
    assert (header.version, header.kms, header.kek_id) == (1, "local", "primary")
    assert header.chunk_size == 4096
    assert len(header.nonce) == 12
    assert (tmp_path / "model.enc").read_bytes().startswith(MAGIC)


def test_each_object_gets_a_fresh_data_key_and_nonce(kms: LocalKMS) -> None:
    first = encrypt_bytes(b"same", kms, "primary")
    second = encrypt_bytes(b"same", kms, "primary")
    assert first != second
    one, two = read_header(io.BytesIO(first)), read_header(io.BytesIO(second))
    assert one.nonce != two.nonce
    assert one.wrapped_key != two.wrapped_key


def test_plaintext_does_not_appear_in_the_envelope(kms: LocalKMS) -> None:
    secret = b"patient 4711 has condition X " * 50
    sealed = encrypt_bytes(secret, kms, "primary", chunk_size=64)
    assert b"patient" not in sealed


class _Trickle(io.RawIOBase):
    """A non-seekable source that returns at most 7 bytes per read, like a slow pipe."""

    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)
        self._at = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        size = min(7, len(buffer), len(self._data) - self._at)
        buffer[:size] = self._data[self._at : self._at + size]
        self._at += size
        return size


class _ReadOnly:
    """A source with `read` but no `readinto`."""

    def __init__(self, data: bytes) -> None:
        self._stream = io.BytesIO(data)

    def read(self, size: int) -> bytes:
        return self._stream.read(min(size, 5))


def test_short_reads_and_read_only_streams(kms: LocalKMS) -> None:
    plaintext = _seeded(1, 5_000)
    sealed = io.BytesIO()
    encrypt_stream(_Trickle(plaintext), sealed, kms, "primary", chunk_size=100)
    out = io.BytesIO()
    decrypt_stream(_Trickle(sealed.getvalue()), out, kms)
    assert out.getvalue() == plaintext
    out = io.BytesIO()
    source: BinaryIO = _ReadOnly(sealed.getvalue())  # type: ignore[assignment]
    decrypt_stream(source, out, kms)
    assert out.getvalue() == plaintext


def test_streaming_holds_one_chunk_not_the_file(kms: LocalKMS, tmp_path: Path) -> None:
    source = tmp_path / "big.bin"
    with open(source, "wb") as handle:
        for seed in range(32):
            handle.write(_seeded(seed, 1 << 20))
    tracemalloc.start()
    try:
        encrypt_file(source, tmp_path / "big.enc", kms, "primary")
        decrypt_file(tmp_path / "big.enc", tmp_path / "big.out", kms)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20  # a few chunk buffers, not the 32 MiB file
    assert _sha256(tmp_path / "big.out") == _sha256(source)


@pytest.mark.parametrize("chunk_size", [0, -1, MAX_CHUNK_SIZE + 1])
def test_invalid_chunk_size_is_refused(kms: LocalKMS, chunk_size: int) -> None:
    with pytest.raises(InvalidInput, match="chunk size"):
        encrypt_bytes(b"x", kms, "primary", chunk_size=chunk_size)


# -- tampering ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample(kms: LocalKMS) -> tuple[bytes, bytes]:
    """(plaintext, envelope): 5 chunks of 16 bytes and a partial sixth, with associated data."""
    plaintext = _seeded(7, 5 * CHUNK + 9)
    return plaintext, encrypt_bytes(
        plaintext, kms, "primary", associated_data=b"sha256:feed", chunk_size=CHUNK
    )


def _refused(kms: LocalKMS, sealed: bytes, associated: bytes = b"sha256:feed") -> str:
    with pytest.raises(DecryptionFailed) as caught:
        decrypt_bytes(sealed, kms, associated_data=associated)
    return caught.value.message


def test_the_sample_decrypts(kms: LocalKMS, sample: tuple[bytes, bytes]) -> None:
    plaintext, sealed = sample
    assert decrypt_bytes(sealed, kms, associated_data=b"sha256:feed") == plaintext


def test_every_single_bit_flip_is_detected(kms: LocalKMS, sample: tuple[bytes, bytes]) -> None:
    _, sealed = sample
    for bit in range(len(sealed) * 8):
        _refused(kms, _flip(sealed, bit))


def test_every_truncation_is_detected(kms: LocalKMS, sample: tuple[bytes, bytes]) -> None:
    _, sealed = sample
    for length in range(len(sealed)):
        _refused(kms, sealed[:length])


def test_truncation_at_a_chunk_boundary_names_the_chunk(
    kms: LocalKMS, sample: tuple[bytes, bytes]
) -> None:
    _, sealed = sample
    header = read_header(io.BytesIO(sealed))
    chunks = _chunks(sealed, header)
    kept = sealed[: header.length] + b"".join(chunks[:3])
    assert _refused(kms, kept) == "the ciphertext was altered or truncated at chunk 2"
    assert "no data after its header" in _refused(kms, sealed[: header.length])


@pytest.mark.parametrize(
    "extra", [b"\x00", b"garbage", bytes(CHUNK + TAG_BYTES), bytes(3 * (CHUNK + TAG_BYTES))]
)
def test_appended_bytes_are_detected(
    kms: LocalKMS, sample: tuple[bytes, bytes], extra: bytes
) -> None:
    _, sealed = sample
    _refused(kms, sealed + extra)


def test_appending_a_copy_of_the_final_chunk_is_detected(
    kms: LocalKMS, sample: tuple[bytes, bytes]
) -> None:
    _, sealed = sample
    header = read_header(io.BytesIO(sealed))
    _refused(kms, sealed + _chunks(sealed, header)[-1])


def test_reordered_dropped_or_duplicated_chunks_are_detected(
    kms: LocalKMS, sample: tuple[bytes, bytes]
) -> None:
    _, sealed = sample
    header = read_header(io.BytesIO(sealed))
    head, chunks = sealed[: header.length], _chunks(sealed, header)
    swapped = [chunks[1], chunks[0], *chunks[2:]]
    assert _refused(kms, head + b"".join(swapped)).endswith(
        "(or its header was altered, or the associated data does not match)"
    )
    middle_swapped = [*chunks[:2], chunks[3], chunks[2], *chunks[4:]]
    assert _refused(kms, head + b"".join(middle_swapped)).endswith("at chunk 2")
    _refused(kms, head + b"".join(chunks[:2] + chunks[3:]))  # one dropped
    _refused(kms, head + b"".join(chunks[:3] + chunks[2:]))  # one repeated
    # The final chunk moved to the end of a shorter stream.
    _refused(kms, head + b"".join([*chunks[:2], chunks[-1]]))


def test_chunks_spliced_from_another_envelope_under_the_same_kek_are_detected(
    kms: LocalKMS, sample: tuple[bytes, bytes]
) -> None:
    plaintext, sealed = sample
    other = encrypt_bytes(plaintext, kms, "primary", associated_data=b"sha256:feed", chunk_size=16)
    header, other_header = read_header(io.BytesIO(sealed)), read_header(io.BytesIO(other))
    mine, theirs = _chunks(sealed, header), _chunks(other, other_header)
    for index in range(len(mine)):
        spliced = [*mine[:index], theirs[index], *mine[index + 1 :]]
        _refused(kms, sealed[: header.length] + b"".join(spliced))
    # Their header (and so their data key) on my chunks, and the other way round.
    _refused(kms, other[: other_header.length] + sealed[header.length :])
    _refused(kms, sealed[: header.length] + other[other_header.length :])


def test_wrong_or_missing_associated_data_is_detected(
    kms: LocalKMS, sample: tuple[bytes, bytes]
) -> None:
    _, sealed = sample
    message = _refused(kms, sealed, associated=b"sha256:beef")
    assert "associated data does not match" in message
    _refused(kms, sealed, associated=b"")


def test_a_failure_never_yields_unauthenticated_plaintext(
    kms: LocalKMS, sample: tuple[bytes, bytes]
) -> None:
    """What a failing stream has written is exactly the chunks before the bad one."""
    plaintext, sealed = sample
    header = read_header(io.BytesIO(sealed))
    for bit in range(header.length * 8, len(sealed) * 8, 13):
        out = io.BytesIO()
        with pytest.raises(DecryptionFailed):
            decrypt_stream(io.BytesIO(_flip(sealed, bit)), out, kms, associated_data=b"sha256:feed")
        bad_chunk = (bit // 8 - header.length) // (CHUNK + TAG_BYTES)
        assert out.getvalue() == plaintext[: bad_chunk * CHUNK]


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (b"", "not a Stockade envelope"),
        (b"PK\x03\x04 a zip file, not an envelope", "not a Stockade envelope"),
        (MAGIC, "truncated in its header"),
        (MAGIC + b"\x09", "unsupported envelope version 9"),
    ],
)
def test_things_that_are_not_envelopes(kms: LocalKMS, blob: bytes, message: str) -> None:
    with pytest.raises(DecryptionFailed, match=message):
        decrypt_bytes(blob, kms)
    with pytest.raises(DecryptionFailed, match=message):
        read_header(io.BytesIO(blob))


def test_header_naming_an_unknown_kek_fails_clearly(kms: LocalKMS) -> None:
    sealed = encrypt_bytes(b"abc", kms, "primary")
    # Same length, other id: the header is valid in form but names a key that is not here.
    forged = sealed.replace(b"primary", b"primarz", 1)
    assert "'primarz' named in the envelope was not found" in _refused(kms, forged, b"")


# -- destroyed keys ------------------------------------------------------------------------


def test_destroying_a_kek_shreds_its_objects_only(tmp_path: Path) -> None:
    kms = LocalKMS(KeyStore(tmp_path / "keys"))
    kms.create_kek("retiring")
    kms.create_kek("staying")
    doomed = [encrypt_bytes(_seeded(i, 300), kms, "retiring", chunk_size=64) for i in range(3)]
    kept = [encrypt_bytes(_seeded(i, 300), kms, "staying", chunk_size=64) for i in range(3)]

    kms.destroy_kek("retiring")

    for sealed in doomed:
        with pytest.raises(DecryptionFailed, match=r"^key destroyed: .*'retiring' was destroyed"):
            decrypt_bytes(sealed, kms)
    for index, sealed in enumerate(kept):
        assert decrypt_bytes(sealed, kms) == _seeded(index, 300)
    with pytest.raises(DecryptionFailed, match="key destroyed"):
        decrypt_file(_write(tmp_path / "doomed.enc", doomed[0]), tmp_path / "out.bin", kms)
    assert not (tmp_path / "out.bin").exists()


# -- files --------------------------------------------------------------------------------


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def test_file_round_trip_is_private_and_leaves_no_temp_files(kms: LocalKMS, tmp_path: Path) -> None:
    _write(tmp_path / "weights.bin", _seeded(3, 70_000))
    encrypt_file(
        tmp_path / "weights.bin", tmp_path / "weights.enc", kms, "primary", associated_data=b"d"
    )
    decrypt_file(tmp_path / "weights.enc", tmp_path / "weights.out", kms, associated_data=b"d")
    assert (tmp_path / "weights.out").read_bytes() == _seeded(3, 70_000)
    for name in ("weights.enc", "weights.out"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "weights.bin",
        "weights.enc",
        "weights.out",
    ]


def test_encrypting_in_place_replaces_the_file(kms: LocalKMS, tmp_path: Path) -> None:
    path = _write(tmp_path / "data.csv", b"a,b\n1,2\n")
    encrypt_file(path, path, kms, "primary")
    assert path.read_bytes().startswith(MAGIC)
    decrypt_file(path, path, kms)
    assert path.read_bytes() == b"a,b\n1,2\n"


def _tamperings(sealed: bytes) -> dict[str, bytes]:
    header = read_header(io.BytesIO(sealed))
    chunks = _chunks(sealed, header)
    return {
        "header bit": _flip(sealed, 8 * 20 + 3),
        "wrapped key bit": _flip(sealed, 8 * (header.length - 5)),
        "last chunk tag": _flip(sealed, 8 * len(sealed) - 1),
        "truncated": sealed[: header.length + CHUNK + TAG_BYTES + 4],
        "extended": sealed + b"\x00",
        "swapped": sealed[: header.length] + chunks[1] + chunks[0] + b"".join(chunks[2:]),
        "not an envelope": b"plain text",
    }


@pytest.mark.parametrize(
    "kind",
    [
        "header bit",
        "wrapped key bit",
        "last chunk tag",
        "truncated",
        "extended",
        "swapped",
        "not an envelope",
    ],
)
def test_failed_file_decryption_leaves_no_output(
    kms: LocalKMS, sample: tuple[bytes, bytes], tmp_path: Path, kind: str
) -> None:
    _, sealed = sample
    source = _write(tmp_path / "in.enc", _tamperings(sealed)[kind])
    with pytest.raises(DecryptionFailed):
        decrypt_file(source, tmp_path / "out.bin", kms, associated_data=b"sha256:feed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.enc"]
    # An existing output file is left exactly as it was.
    _write(tmp_path / "out.bin", b"previous")
    with pytest.raises(DecryptionFailed):
        decrypt_file(source, tmp_path / "out.bin", kms, associated_data=b"sha256:feed")
    assert (tmp_path / "out.bin").read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.enc", "out.bin"]


def test_failed_file_encryption_leaves_no_output(kms: LocalKMS, tmp_path: Path) -> None:
    source = _write(tmp_path / "in.bin", b"data")
    with pytest.raises(NotFound):
        encrypt_file(source, tmp_path / "out.enc", kms, "no-such-kek")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.bin"]


def test_file_errors_are_clear(kms: LocalKMS, tmp_path: Path) -> None:
    with pytest.raises(NotFound, match=r"input file .*missing\.bin not found"):
        encrypt_file(tmp_path / "missing.bin", tmp_path / "out", kms, "primary")
    with pytest.raises(InvalidInput, match="is a directory"):
        encrypt_file(tmp_path, tmp_path / "out", kms, "primary")
    source = _write(tmp_path / "in.bin", b"data")
    with pytest.raises(InvalidInput, match=r"output folder .* does not exist"):
        encrypt_file(source, tmp_path / "nope" / "out", kms, "primary")
    with pytest.raises(NotFound):
        read_header(tmp_path / "missing.enc")


# -- beyond 2 GiB --------------------------------------------------------------------------

_PATCHES = (0, (1 << 31) - 777, (1 << 31) + 5, (1 << 31) + 4099 - 300)


@pytest.mark.slow
def test_a_file_over_two_gib_round_trips(kms: LocalKMS, tmp_path: Path) -> None:
    """2 GiB + 4099 bytes: a sparse plaintext with random patches across the 2**31 mark."""
    size = (1 << 31) + 4099
    plain = tmp_path / "plain.bin"
    with open(plain, "wb") as handle:
        handle.truncate(size)
        for seed, offset in enumerate(_PATCHES):
            handle.seek(offset)
            handle.write(_seeded(seed, min(1500, size - offset)))
    expected = _sha256(plain)
    sealed, out = tmp_path / "plain.enc", tmp_path / "plain.out"
    try:
        header = encrypt_file(plain, sealed, kms, "primary", associated_data=expected.encode())
        plain.unlink()
        chunks = -(-size // DEFAULT_CHUNK_SIZE)
        assert sealed.stat().st_size == header.length + size + chunks * TAG_BYTES
        decrypt_file(sealed, out, kms, associated_data=expected.encode())
        assert out.stat().st_size == size
        assert _sha256(out) == expected
    finally:
        for path in (plain, sealed, out):
            path.unlink(missing_ok=True)
    assert os.listdir(tmp_path) == []
