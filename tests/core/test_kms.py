"""The KMS interface and LocalKMS: wrapping binds key id and associated data, keys are private
files, and a destroyed key-encryption key is gone for good (crypto-shredding)."""

from __future__ import annotations

import shutil
import stat
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from stockade.core.envelope import DecryptionFailed, decrypt_bytes, encrypt_bytes
from stockade.core.errors import Conflict, InvalidInput, NotFound, StockadeError
from stockade.core.keys import KeyStore
from stockade.core.kms import KMS, KeyDestroyed, LocalKMS, UnwrapFailed

DATA_KEY = bytes(range(32))
CONTEXT = b"object:sha256:abc"


@pytest.fixture
def store(tmp_path: Path) -> KeyStore:
    return KeyStore(tmp_path / "keys")


@pytest.fixture
def kms(store: KeyStore) -> LocalKMS:
    local = LocalKMS(store)
    local.create_kek("primary")
    return local


def test_wrap_then_unwrap_returns_the_data_key(kms: LocalKMS) -> None:
    wrapped = kms.wrap("primary", DATA_KEY, CONTEXT)
    assert DATA_KEY not in wrapped
    assert kms.unwrap("primary", wrapped, CONTEXT) == DATA_KEY


def test_each_wrap_uses_a_fresh_nonce(kms: LocalKMS) -> None:
    assert kms.wrap("primary", DATA_KEY, CONTEXT) != kms.wrap("primary", DATA_KEY, CONTEXT)


def test_name_and_has_kek(kms: LocalKMS) -> None:
    assert kms.name == "local"
    assert kms.has_kek("primary")
    assert not kms.has_kek("other")


def test_kek_file_is_32_private_bytes_in_a_private_folder(kms: LocalKMS, store: KeyStore) -> None:
    path = store.root / "kek" / "primary.key"
    assert path.stat().st_size == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(store.root.stat().st_mode) == 0o700


def test_other_associated_data_does_not_unwrap(kms: LocalKMS) -> None:
    wrapped = kms.wrap("primary", DATA_KEY, CONTEXT)
    with pytest.raises(UnwrapFailed, match="altered"):
        kms.unwrap("primary", wrapped, b"object:sha256:abd")


def test_another_kek_does_not_unwrap(kms: LocalKMS) -> None:
    kms.create_kek("secondary")
    wrapped = kms.wrap("primary", DATA_KEY, CONTEXT)
    with pytest.raises(UnwrapFailed):
        kms.unwrap("secondary", wrapped, CONTEXT)


def test_key_id_is_bound_even_when_the_material_is_the_same(kms: LocalKMS, store: KeyStore) -> None:
    shutil.copyfile(store.root / "kek" / "primary.key", store.root / "kek" / "copy.key")
    wrapped = kms.wrap("primary", DATA_KEY, CONTEXT)
    with pytest.raises(UnwrapFailed):
        kms.unwrap("copy", wrapped, CONTEXT)


def test_every_bit_of_a_wrapped_key_is_authenticated(kms: LocalKMS) -> None:
    wrapped = kms.wrap("primary", DATA_KEY, CONTEXT)
    for position in range(len(wrapped) * 8):
        altered = bytearray(wrapped)
        altered[position // 8] ^= 1 << (position % 8)
        with pytest.raises(UnwrapFailed):
            kms.unwrap("primary", bytes(altered), CONTEXT)
    for length in range(len(wrapped)):
        with pytest.raises(UnwrapFailed):
            kms.unwrap("primary", wrapped[:length], CONTEXT)


def test_unknown_kek_is_not_found(kms: LocalKMS) -> None:
    with pytest.raises(NotFound):
        kms.wrap("missing", DATA_KEY, CONTEXT)
    with pytest.raises(NotFound):
        kms.unwrap("missing", b"\x01" + bytes(60), CONTEXT)
    with pytest.raises(NotFound):
        kms.destroy_kek("missing")


def test_bad_inputs_are_refused(kms: LocalKMS) -> None:
    with pytest.raises(InvalidInput):
        kms.wrap("primary", b"", CONTEXT)
    with pytest.raises(InvalidInput):
        kms.create_kek("../escape")
    with pytest.raises(Conflict):
        kms.create_kek("primary")


def test_destroyed_kek_cannot_unwrap_wrap_or_come_back(kms: LocalKMS, store: KeyStore) -> None:
    kms.create_kek("secondary")
    doomed = kms.wrap("primary", DATA_KEY, CONTEXT)
    survivor = kms.wrap("secondary", DATA_KEY, CONTEXT)

    kms.destroy_kek("primary")

    assert not kms.has_kek("primary")
    assert not (store.root / "kek" / "primary.key").exists()
    assert kms.destroyed_at("primary") is not None
    with pytest.raises(KeyDestroyed, match="'primary' was destroyed at") as caught:
        kms.unwrap("primary", doomed, CONTEXT)
    assert isinstance(caught.value, StockadeError)
    assert caught.value.exit_code == 1
    with pytest.raises(KeyDestroyed):
        kms.wrap("primary", DATA_KEY, CONTEXT)
    with pytest.raises(KeyDestroyed):
        kms.destroy_kek("primary")
    with pytest.raises(Conflict, match="never reused"):
        kms.create_kek("primary")
    assert kms.unwrap("secondary", survivor, CONTEXT) == DATA_KEY


def test_destroy_refuses_an_id_shared_with_a_signing_key(kms: LocalKMS, store: KeyStore) -> None:
    store.create_signing_key("primary")
    with pytest.raises(Conflict, match="both"):
        kms.destroy_kek("primary")
    assert kms.has_kek("primary")
    store.signing_key("primary")


def test_the_interface_cannot_be_instantiated() -> None:
    with pytest.raises(TypeError):
        KMS()  # type: ignore[abstract]


class _MemoryKMS(KMS):
    """A second, independent implementation: the envelope works with any KMS."""

    def __init__(self) -> None:
        self._keys: dict[str, bytes] = {}

    @property
    def name(self) -> str:
        return "memory"

    def create_kek(self, key_id: str) -> None:
        if key_id in self._keys:
            raise Conflict(key_id)
        self._keys[key_id] = AESGCM.generate_key(bit_length=256)

    def wrap(self, key_id: str, data_key: bytes, associated_data: bytes) -> bytes:
        nonce = bytes(12)  # acceptable only because each test wraps once per key
        return AESGCM(self._keys[key_id]).encrypt(nonce, data_key, associated_data)

    def unwrap(self, key_id: str, wrapped: bytes, associated_data: bytes) -> bytes:
        try:
            return AESGCM(self._keys[key_id]).decrypt(bytes(12), wrapped, associated_data)
        except InvalidTag:
            raise UnwrapFailed("altered") from None

    def destroy_kek(self, key_id: str) -> None:
        del self._keys[key_id]

    def has_kek(self, key_id: str) -> bool:
        return key_id in self._keys


def test_envelopes_work_with_any_kms_and_name_the_kms_that_sealed_them(kms: LocalKMS) -> None:
    memory = _MemoryKMS()
    memory.create_kek("primary")
    sealed = encrypt_bytes(b"model weights", memory, "primary")
    assert decrypt_bytes(sealed, memory) == b"model weights"
    with pytest.raises(DecryptionFailed, match="wrapped by KMS 'memory', not 'local'"):
        decrypt_bytes(sealed, kms)
    # Key ids follow the KMS's own rules (here a cloud-style key name), not the local store's.
    cloud_id = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    memory.create_kek(cloud_id)
    assert decrypt_bytes(encrypt_bytes(b"x", memory, cloud_id), memory) == b"x"
    with pytest.raises(InvalidInput, match="printable ASCII"):
        encrypt_bytes(b"x", memory, "has space")
