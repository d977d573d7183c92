"""Job ids: sortable by time, unique, in a fixed alphabet."""

from __future__ import annotations

import re

from monoq.core.ids import encode128, id_time_ms, new_id, new_ids

ID_RE = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")


def test_ids_sort_in_creation_order_within_a_millisecond_and_across() -> None:
    ids = [new_id() for _ in range(5000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert all(ID_RE.match(i) for i in ids)


def test_ids_sort_by_time_across_processes() -> None:
    # ids of a later millisecond sort after any id of an earlier one, whatever the random part
    early = new_id(now_ms=4_102_444_800_000)
    late = new_id(now_ms=4_102_444_800_001)
    assert early < late
    assert id_time_ms(early) == 4_102_444_800_000
    assert id_time_ms(late) == 4_102_444_800_001



def test_the_encoding_is_crockford_base32_most_significant_first() -> None:
    alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    for value in (0, 1, 0x0123456789AB << 80 | 12345, (1 << 128) - 1):
        expected = "".join(alphabet[(value >> (5 * i)) & 31] for i in reversed(range(26)))
        assert encode128(value) == expected


def test_ids_made_in_one_step_keep_the_order_of_ids_made_one_at_a_time() -> None:
    before = new_id()
    batch = new_ids(3000)
    after = new_id()
    assert [before, *batch, after] == sorted({before, *batch, after})
    assert all(ID_RE.match(i) for i in batch)
    assert new_ids(0) == []
