"""Table views (streams/state.py): the read cache in front of a table, and base64 byte values."""

from __future__ import annotations

import pytest

from streams.state import Base64Values, CachedTable


class CountingTable(dict):
    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def __getitem__(self, key):
        self.reads += 1
        return super().__getitem__(key)


def test_reads_are_served_from_the_cache_after_the_first() -> None:
    table = CountingTable()
    table["a"] = {"n": 1}
    cached = CachedTable(table, max_entries=10)
    assert cached.get("a") == {"n": 1} and cached["a"] == {"n": 1} and "a" in cached
    assert table.reads == 1 and (cached.hits, cached.misses) == (2, 1)


def test_writes_go_through_to_the_table_at_once() -> None:
    table = CountingTable()
    cached = CachedTable(table, max_entries=10)
    cached["a"] = {"n": 2}
    assert table["a"] == {"n": 2} and cached["a"] == {"n": 2}
    del cached["a"]
    assert "a" not in table and "a" not in cached and cached.get("a") is None


def test_a_missing_key_is_remembered_until_written() -> None:
    table = CountingTable()
    cached = CachedTable(table, max_entries=10)
    assert cached.get("a") is None and cached.get("a", 5) == 5 and "a" not in cached
    with pytest.raises(KeyError):
        cached["a"]
    cached["a"] = {"n": 1}
    assert cached["a"] == {"n": 1} and table.reads == 0


def test_least_recently_used_keys_are_dropped_and_read_again() -> None:
    table = CountingTable()
    for key in "abc":
        table[key] = key.upper()
    cached = CachedTable(table, max_entries=2)
    cached.get("a"), cached.get("b"), cached.get("a"), cached.get("c")  # b is the least recently used
    reads = table.reads
    assert cached.get("a") == "A" and table.reads == reads
    assert cached.get("b") == "B" and table.reads == reads + 1


def test_clearing_the_cache_reads_what_another_writer_put_in_the_table() -> None:
    """After a rebalance another worker may have written the product: the cache must not hide it."""
    table = CountingTable()
    table["a"] = {"n": 1}
    cached = CachedTable(table, max_entries=10)
    cached.get("a")
    table["a"] = {"n": 7}  # written by the partition's other owner
    cached.clear_cache()
    assert cached["a"] == {"n": 7}


def test_no_cache_and_bad_values() -> None:
    table = CountingTable()
    table["a"] = 1
    cached = CachedTable(table, max_entries=0)
    cached.get("a"), cached.get("a")
    assert table.reads == 2
    with pytest.raises(ValueError):
        cached["b"] = None
    with pytest.raises(ValueError):
        CachedTable(table, max_entries=-1)


def test_base64_values_round_trip_bytes_as_text() -> None:
    table: dict = {}
    values = Base64Values(table)
    values["a"] = b"\x00\xffwire"
    assert table["a"] == "AP93aXJl" and values["a"] == b"\x00\xffwire" and list(values) == ["a"] and len(values) == 1
