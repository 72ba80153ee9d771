"""Cache key ids, the match rule and the in-memory key storage (spec/solver.md §3.1)."""

from __future__ import annotations

import hashlib

from bkcore.solver.keys import content_key, match, newest_records, root_key, save_key
from bkcore.solver.keystorage import LinkLabel
from bkcore.solver.memkeys import MemoryKeyStorage


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_root_key_is_sha256_of_digest_at_output() -> None:
    digest = "sha256:" + sha("op")
    assert root_key(digest, 0) == "sha256:" + sha(f"{digest}@0")
    assert root_key(digest, 1) != root_key(digest, 0)


def test_random_digest_gives_random_key() -> None:
    digest = "random:" + sha("session:ctx")
    assert root_key(digest, 0) == "random:" + sha(f"{digest}@0")


def test_content_key_uses_output_minus_one() -> None:
    assert content_key("sha256:abc") == "sha256:" + sha("sha256:abc@-1")


def test_match_needs_a_link_from_every_input() -> None:
    keys = MemoryKeyStorage()
    a, b, c = root_key("sha256:a", 0), root_key("sha256:b", 0), root_key("sha256:c", 0)
    saved = save_key(keys, "sha256:op", 0, [[(a, "sel")], [(b, "")]], "r1", 1.0)
    assert match(keys, "sha256:op", 0, [[(a, "sel")], [(b, "")]]) == [saved]
    # One input differs: no match.
    assert match(keys, "sha256:op", 0, [[(a, "sel")], [(c, "")]]) == []
    # Wrong selector, output or digest in the label: no match.
    assert match(keys, "sha256:op", 0, [[(a, "other")], [(b, "")]]) == []
    assert match(keys, "sha256:op", 1, [[(a, "sel")], [(b, "")]]) == []
    assert match(keys, "sha256:op2", 0, [[(a, "sel")], [(b, "")]]) == []
    # Any one alternative of an input is enough.
    assert match(keys, "sha256:op", 0, [[(c, "sel"), (a, "sel")], [(b, "")]]) == [saved]


def test_content_key_alternative_matches_with_empty_selector() -> None:
    keys = MemoryKeyStorage()
    src_v1 = root_key("sha256:src-v1", 0)
    ck = content_key("sha256:content")
    saved = save_key(keys, "sha256:copy", 0, [[(src_v1, "/a"), (ck, "")]], "r1", 1.0)
    src_v2 = root_key("sha256:src-v2", 0)  # a new source with the same content
    assert match(keys, "sha256:copy", 0, [[(src_v2, "/a"), (ck, "")]]) == [saved]
    assert keys.walk_links(ck, LinkLabel(0, 0, "sha256:copy", "")) == [saved]


def test_save_reuses_a_matching_key_and_newest_record_wins() -> None:
    keys = MemoryKeyStorage()
    a = root_key("sha256:a", 0)
    first = save_key(keys, "sha256:op", 0, [[(a, "")]], "old", 1.0)
    second = save_key(keys, "sha256:op", 0, [[(a, "")]], "new", 2.0)
    assert first == second
    records = newest_records(keys, [first])
    assert [r.result_id for r in records] == ["new", "old"]


def test_root_op_saves_under_its_root_key() -> None:
    keys = MemoryKeyStorage()
    key = save_key(keys, "sha256:src", 0, [], "r", 1.0)
    assert key == root_key("sha256:src", 0)
    assert [r.result_id for r in keys.results(key)] == ["r"]


def test_release_result_drops_records_and_dangling_keys() -> None:
    keys = MemoryKeyStorage()
    a = root_key("sha256:a", 0)
    save_key(keys, "sha256:a", 0, [], "ra", 1.0)
    child = save_key(keys, "sha256:op", 0, [[(a, "")]], "rc", 1.0)
    assert keys.exists(child)
    keys.release_result("rc")
    assert keys.results(child) == []
    assert not keys.exists(child)
    assert keys.walk_links(a, LinkLabel(0, 0, "sha256:op", "")) == []
    assert [r.result_id for r in keys.results(a)] == ["ra"]  # still has its own result
    keys.release_result("ra")
    assert not keys.exists(a)


def test_release_keeps_keys_that_still_lead_somewhere() -> None:
    keys = MemoryKeyStorage()
    a = root_key("sha256:a", 0)
    save_key(keys, "sha256:a", 0, [], "ra", 1.0)
    child = save_key(keys, "sha256:op", 0, [[(a, "")]], "rc", 1.0)
    keys.release_result("ra")
    assert keys.exists(a)  # links on to child, which still has a result
    assert match(keys, "sha256:op", 0, [[(a, "")]]) == [child]
