"""Views over Faust tables that the Processor uses as plain mutable mappings.

- Base64Values: bytes values kept as base64 text (Faust's changelog recovery ignores a per-table codec,
  so a table of wire bytes goes through JSON like every other).
- CachedTable: a bounded read cache in front of a table. A read through Faust costs a key encoding, two
  or three RocksDB lookups and a JSON decode; the statistics path reads every product it touches, so
  the decoded values of recently used products stay in memory. Writes go to the table at once (its
  changelog and store) and to the cache. The cache is emptied whenever partitions move (see
  streams/app.py), because only then can another worker have written a product this one has cached.

A value read from a CachedTable is the cached object itself: the Processor owns it until it writes it
back, and every mutation it makes is followed by that write (or is harmless to lose, like adding an
empty list).
"""

from __future__ import annotations

import base64
from collections import OrderedDict
from collections.abc import Iterator, MutableMapping
from typing import Any

_MISSING = object()


class Base64Values(MutableMapping):
    """A table of bytes values stored as base64 text."""

    def __init__(self, table: MutableMapping) -> None:
        self._table = table

    def __getitem__(self, key: str) -> bytes:
        return base64.b64decode(self._table[key])

    def __setitem__(self, key: str, value: bytes) -> None:
        self._table[key] = base64.b64encode(value).decode("ascii")

    def __delitem__(self, key: str) -> None:
        del self._table[key]

    def __contains__(self, key: object) -> bool:
        return key in self._table

    def __iter__(self) -> Iterator[str]:
        return iter(self._table)

    def __len__(self) -> int:
        return len(self._table)


class CachedTable(MutableMapping):
    """Read-through, write-through cache of at most `max_entries` keys (least recently used dropped)."""

    def __init__(self, table: MutableMapping, max_entries: int) -> None:
        if max_entries < 0:
            raise ValueError(f"max_entries must be >= 0, got {max_entries}")
        self._table = table
        self._cache: OrderedDict[Any, Any] = OrderedDict()
        self.max_entries = max_entries
        self.hits = self.misses = 0

    def clear_cache(self) -> None:
        self._cache.clear()

    def _remember(self, key: Any, value: Any) -> None:
        if self.max_entries == 0:
            return
        cache = self._cache
        cache[key] = value
        cache.move_to_end(key)
        if len(cache) > self.max_entries:
            cache.popitem(last=False)

    def _lookup(self, key: Any) -> Any:
        value = self._cache.get(key, _MISSING)
        if value is not _MISSING:
            self.hits += 1
            self._cache.move_to_end(key)
            return value
        self.misses += 1
        # `in` first: for a new key RocksDB answers from its bloom filter, without a read or an exception
        value = self._table[key] if key in self._table else None
        self._remember(key, value)
        return value

    def get(self, key: Any, default: Any = None) -> Any:
        value = self._lookup(key)
        return default if value is None else value

    def __getitem__(self, key: Any) -> Any:
        value = self._lookup(key)
        if value is None:
            raise KeyError(key)
        return value

    def __contains__(self, key: object) -> bool:
        return self._lookup(key) is not None

    def __setitem__(self, key: Any, value: Any) -> None:
        if value is None:
            raise ValueError("a CachedTable cannot hold None (it marks a missing key)")
        self._table[key] = value
        self._remember(key, value)

    def __delitem__(self, key: Any) -> None:
        try:
            del self._table[key]
        finally:
            self._cache.pop(key, None)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._table)

    def __len__(self) -> int:
        return len(self._table)
