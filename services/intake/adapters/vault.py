"""Personal data at rest: every value encrypted under its client's own data key (envelope encryption).

- Each client has a random 256-bit **data key**. It is stored only wrapped (AES-256-GCM) under the
  service's key-encryption key from configuration (`lotse_kit.keyring.Keyring`, settings
  `LOTSE_INTAKE_KEK`, `..._KEK_ID`, `..._OLD_KEKS`), with the KEK's id and bound to the client id
  (table `client_keys`). A KEK rotation re-wraps these 32-byte keys (handlers/keys.py) and never
  re-encrypts data.
- Each **personal-data value** (`client_personal_data.<field>_enc`: names, birth date, e-mail, phone,
  education, health; `referral_notes.<field>_enc`: reason, free text, decline text, outcome, revoke
  reason) is AES-256-GCM under the client's data key with a fresh 96-bit nonce. The associated data
  binds it to the client id and its column (and, for notes, the referral): a ciphertext copied to
  another client, column or referral does not open. Stored as `0x01 || nonce || ciphertext+tag`.
- **Erasure** deletes the data key and the ciphertexts (`shred`): nothing that could open what may
  remain in backups is left (crypto-shredding).

No function here logs a value or a key, or puts one into an exception message.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Mapping
from datetime import date
from typing import Any

import asyncpg
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from lotse_kit.clock import Clock
from lotse_kit.keyring import Keyring, KeyUnavailable, SealedValue

from . import repository as repo

DATA_KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12
FORMAT_V1 = b"\x01"

PERSONAL_COLUMNS = repo.PERSONAL_COLUMNS
NOTE_COLUMNS = repo.NOTE_COLUMNS

# How a decrypted value is read back (everything else is text).
_PARSE: dict[str, Callable[[str], Any]] = {"date_of_birth": date.fromisoformat}


class DataUnavailable(Exception):
    """A stored value does not open: its client's data key is gone or does not fit, or the value was altered or moved."""


def key_associated_data(client_id: uuid.UUID) -> bytes:
    """What a wrapped data key is bound to: its client."""
    return b"lotse-intake/data-key/v1:" + str(client_id).encode()


def value_associated_data(client_id: uuid.UUID, column: str, referral_id: uuid.UUID | None = None) -> bytes:
    """What an encrypted value is bound to: its client and column (and the referral, for notes)."""
    where = f"lotse-intake/value/v1:{client_id}:{column}"
    return (where + (f":{referral_id}" if referral_id else "")).encode()


class Vault:
    """Encrypts and decrypts intake's personal data; every read and write of those columns goes through here."""

    def __init__(self, keyring: Keyring, clock: Clock) -> None:
        self.keyring = keyring
        self.clock = clock

    # ------------------------------------------------------------ data keys
    async def _data_key(self, conn: asyncpg.Connection, client_id: uuid.UUID, *, create: bool = False) -> AESGCM | None:
        row = await repo.get_client_key(conn, client_id)
        if row is None and create:
            wrapped = self.keyring.seal(os.urandom(DATA_KEY_BYTES), key_associated_data(client_id))
            await repo.insert_client_key(conn, client_id, wrapped.kek_id, wrapped.nonce, wrapped.ciphertext, self.clock.now())
            row = await repo.get_client_key(conn, client_id)  # ours, or the one a concurrent writer stored first
        if row is None:
            return None
        return AESGCM(self.keyring.open(_wrapped(row), key_associated_data(client_id)))

    def rewrapped(self, row: Mapping[str, Any]) -> SealedValue:
        """A `client_keys` row's data key wrapped under the current KEK (raises KeyUnavailable if its KEK is unknown)."""
        return self.keyring.rewrap(_wrapped(row), key_associated_data(row["client_id"]))

    # ------------------------------------------------------------ values
    @staticmethod
    def _seal(aead: AESGCM, value: Any, ad: bytes) -> bytes | None:
        if value is None:
            return None
        text = value.isoformat() if isinstance(value, date) else str(value)
        nonce = os.urandom(NONCE_BYTES)
        return FORMAT_V1 + nonce + aead.encrypt(nonce, text.encode("utf-8"), ad)

    @staticmethod
    def _open(aead: AESGCM, blob: bytes | None, column: str, ad: bytes) -> Any:
        if blob is None:
            return None
        if blob[:1] != FORMAT_V1 or len(blob) < 1 + NONCE_BYTES + 16:
            raise DataUnavailable(f"{column}: not an encrypted value")
        try:
            text = aead.decrypt(blob[1 : 1 + NONCE_BYTES], blob[1 + NONCE_BYTES :], ad).decode("utf-8")
        except InvalidTag:
            raise DataUnavailable(f"{column}: does not open under its client's data key") from None
        return _PARSE.get(column, str)(text)

    # ------------------------------------------------------------ the client's personal data
    async def add_client(self, conn: asyncpg.Connection, client_id: uuid.UUID, personal: Mapping[str, Any]) -> None:
        """A new client's data key and its personal data (the fields of PERSONAL_COLUMNS), encrypted."""
        aead = await self._data_key(conn, client_id, create=True)
        assert aead is not None
        sealed = {c: self._seal(aead, personal.get(c), value_associated_data(client_id, c)) for c in PERSONAL_COLUMNS}
        await repo.insert_personal_data(conn, client_id, sealed)

    async def personal(self, conn: asyncpg.Connection, client_id: uuid.UUID) -> dict[str, Any] | None:
        """The client's personal data in clear; None when there is none any more (erased)."""
        row = await repo.get_sealed_personal_data(conn, client_id)
        if row is None:
            return None
        aead = await self._key_or_fail(conn, client_id)
        return {c: self._open(aead, row[f"{c}_enc"], c, value_associated_data(client_id, c)) for c in PERSONAL_COLUMNS}

    async def update_personal(
        self, conn: asyncpg.Connection, client_id: uuid.UUID, changes: Mapping[str, Any], *, create_key: bool = False
    ) -> None:
        """Encrypts and stores the changed personal-data fields (None clears one). `create_key`: for rows that had
        none (clear text from before encryption); otherwise a client without a data key (erased) is refused."""
        if not changes:
            return
        aead = await self._data_key(conn, client_id, create=create_key)
        if aead is None:
            raise DataUnavailable(f"client {client_id} has no data key (erased?)")
        sealed = {c: self._seal(aead, v, value_associated_data(client_id, c)) for c, v in changes.items() if _check(c, PERSONAL_COLUMNS)}
        await repo.update_sealed_personal_data(conn, client_id, sealed)

    # ------------------------------------------------------------ from rows read together with the case
    # (`repo.get_client_sealed`, `repo.clients_sealed`): the same checks as above, without reading again.
    def data_key_of(self, row: Mapping[str, Any]) -> AESGCM | None:
        """The data key of a row carrying client_keys' columns; None when the client has none (erased)."""
        if row["wrapped_key"] is None:
            return None
        return AESGCM(self.keyring.open(_wrapped(row), key_associated_data(row["client_id"])))

    def personal_of(self, row: Mapping[str, Any]) -> dict[str, Any] | None:
        """`personal` from such a row: the personal data in clear; None when there is none any more (erased)."""
        if not row["has_personal"]:
            return None
        client_id = row["client_id"]
        aead = self._row_key_or_fail(row)
        return {c: self._open(aead, row[f"{c}_enc"], c, value_associated_data(client_id, c)) for c in PERSONAL_COLUMNS}

    def notes_of(self, client_row: Mapping[str, Any], referral_id: uuid.UUID, notes_row: Mapping[str, Any]) -> dict[str, Any] | None:
        """`notes` from a row of `repo.referrals_with_sealed_notes` and its client's row; None when there are none."""
        if not notes_row["has_notes"]:
            return None
        client_id = client_row["client_id"]
        aead = self._row_key_or_fail(client_row)
        return {c: self._open(aead, notes_row[f"{c}_enc"], c, value_associated_data(client_id, c, referral_id)) for c in NOTE_COLUMNS}

    def sealed_notes(self, aead: AESGCM, client_id: uuid.UUID, referral_id: uuid.UUID, notes: Mapping[str, Any]) -> dict[str, bytes | None]:
        """A new referral's notes encrypted under the client's data key (every note column, for the insert)."""
        return {c: self._seal(aead, notes.get(c), value_associated_data(client_id, c, referral_id)) for c in NOTE_COLUMNS}

    def _row_key_or_fail(self, row: Mapping[str, Any]) -> AESGCM:
        try:
            aead = self.data_key_of(row)
        except KeyUnavailable as exc:
            raise DataUnavailable(f"the data key of client {row['client_id']} does not open: {exc}") from None
        if aead is None:
            raise DataUnavailable(f"client {row['client_id']} has encrypted data but no data key")
        return aead

    # ------------------------------------------------------------ referral notes
    async def notes(self, conn: asyncpg.Connection, client_id: uuid.UUID, referral_id: uuid.UUID) -> dict[str, Any] | None:
        """A referral's notes in clear; None when there are none (the client was erased)."""
        row = await repo.get_sealed_referral_notes(conn, referral_id)
        if row is None:
            return None
        aead = await self._key_or_fail(conn, client_id)
        return {c: self._open(aead, row[f"{c}_enc"], c, value_associated_data(client_id, c, referral_id)) for c in NOTE_COLUMNS}

    async def update_notes(
        self,
        conn: asyncpg.Connection,
        client_id: uuid.UUID,
        referral_id: uuid.UUID,
        changes: Mapping[str, Any],
        *,
        create_key: bool = False,
    ) -> None:
        """Encrypts and stores changed notes. For an erased client (no data key) nothing is stored: its notes are gone
        for good, also those a partner's later answer brings (`create_key` only for clear text from before encryption)."""
        if not changes:
            return
        aead = await self._data_key(conn, client_id, create=create_key)
        if aead is None:
            return
        sealed = {
            c: self._seal(aead, v, value_associated_data(client_id, c, referral_id)) for c, v in changes.items() if _check(c, NOTE_COLUMNS)
        }
        await repo.update_sealed_referral_notes(conn, referral_id, sealed)

    # ------------------------------------------------------------ erasure
    async def shred(self, conn: asyncpg.Connection, client_id: uuid.UUID) -> None:
        """Crypto-shredding: the data key and every ciphertext of the client are deleted."""
        await repo.delete_referral_notes_of_client(conn, client_id)
        await repo.delete_personal_data(conn, client_id)
        await repo.delete_client_key(conn, client_id)

    async def _key_or_fail(self, conn: asyncpg.Connection, client_id: uuid.UUID) -> AESGCM:
        try:
            aead = await self._data_key(conn, client_id)
        except KeyUnavailable as exc:
            raise DataUnavailable(f"the data key of client {client_id} does not open: {exc}") from None
        if aead is None:
            raise DataUnavailable(f"client {client_id} has encrypted data but no data key")
        return aead


def _wrapped(row: Mapping[str, Any]) -> SealedValue:
    return SealedValue(row["kek_id"], bytes(row["nonce"]), bytes(row["wrapped_key"]))


def _check(column: str, allowed: tuple[str, ...]) -> bool:
    if column not in allowed:
        raise ValueError(f"not an encrypted column: {column}")
    return True
