"""The corpus's document hash computed from hashlib alone (the reference for corpus.text_hash and Shard.owns,
not the code under test)."""

from __future__ import annotations

import hashlib


def blake2b_64(text: str, person: bytes) -> int:
    """hashlib's blake2b of the UTF-8 text, 8 bytes, big-endian, salted by `person`."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8, person=person).digest(), "big")


def owner(text: str, shards: int) -> int:
    """The shard a document's joined paragraphs hash to (salt "corpus-shard")."""
    return blake2b_64(text, b"corpus-shard") % shards
