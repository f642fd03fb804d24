"""How the SQLite ledger keeps webhook payloads: LZ4-compressed.

A webhook body is JSON of typically 5-30 KB that LZ4 shrinks four- to five-fold in a few
microseconds (13.8 KB of ``issues.labeled`` -> 3.0 KB in ~6 us, back in ~2 us). The ledger
writes every payload twice (WAL, then the database file at checkpoint), so compressing it
before the insert cuts the bytes written per delivery, the pages each commit touches and
the time each sync takes, and keeps the database file small. LZ4 rather than zstd or zlib:
they compress better but cost three to ten times the CPU, and the ledger's commit waits for
it (measured with ``bench/ingress.py``).

A stored value is either :data:`MAGIC` followed by an LZ4 block (with its size) or the
payload as it came. ``0xFF`` never occurs in UTF-8, so no JSON payload starts with the
magic; rows written before compression existed read back unchanged, and any payload that
does start with it is stored compressed, so the two never mix up. PostgreSQL compresses
large values itself (TOAST), so only the SQLite store uses this.
"""

from __future__ import annotations

import lz4.block

MAGIC = b"\xfflz4"
#: Payloads shorter than this are stored as they are (compressing would not save enough).
MIN_COMPRESS_BYTES = 256


class PayloadCodecError(ValueError):
    """A stored value that starts with the magic but is not a valid block."""


def encode_payload(payload: bytes) -> bytes:
    """The value to store for ``payload``: compressed when that saves bytes, and always when
    the payload itself starts with the magic."""
    looks_stored = payload[:4] == MAGIC
    if len(payload) < MIN_COMPRESS_BYTES and not looks_stored:
        return payload
    packed = MAGIC + lz4.block.compress(payload)
    return packed if looks_stored or len(packed) < len(payload) else payload


def decode_payload(stored: bytes) -> bytes:
    """The payload of a stored value (compressed or not)."""
    if stored[:4] != MAGIC:
        return stored
    try:
        return lz4.block.decompress(stored[4:])
    except lz4.block.LZ4BlockError as exc:
        raise PayloadCodecError(f"a stored payload is damaged: {exc}") from None
