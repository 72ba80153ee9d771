"""FileOp cache maps (spec/solver.md §2.2) and load checks of bkcore.ops.file."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any, cast

import pytest

from bkcore.errors import DefinitionError
from bkcore.llb import pb
from bkcore.ops.file import FileOpAdapter, Selector, dedupe_selectors, file_cache_map

IN = "sha256:" + "1" * 64


def sha(data: bytes | str) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def make_op(actions: list[pb.FileAction], inputs: int) -> pb.Op:
    """An op as it arrives from the wire (parsed back from its bytes)."""
    op = pb.Op(inputs=[pb.Input(digest=IN, index=i) for i in range(inputs)])
    op.file = pb.FileOp(actions=actions)
    return pb.Op().parse(bytes(op))


def dockerfile_copy(src: str = "/a.txt", dest: str = "/a.txt") -> pb.FileActionCopy:
    return pb.FileActionCopy(
        src=src,
        dest=dest,
        mode=-1,
        follow_symlink=True,
        dir_copy_contents=True,
        create_dest_path=True,
        allow_wildcard=True,
        allow_empty_wildcard=True,
        timestamp=-1,
    )


def named(name: str, index: int) -> pb.UserOpt:
    return pb.UserOpt(by_name=pb.NamedUserOpt(name=name, input=index))


def adapter(op: pb.Op) -> FileOpAdapter:
    return FileOpAdapter(op, "sha256:" + "f" * 64, cast(Any, None))


def decode(doc_actions: list[str]) -> list[dict[str, Any]]:
    return [json.loads(base64.b64decode(a)) for a in doc_actions]


def test_dockerfile_copy_key_matches_the_verified_document() -> None:
    op = make_op([pb.FileAction(input=0, secondary_input=1, output=0, copy=dockerfile_copy())], 2)
    digest, deps = file_cache_map(op.file, 2)
    action = (
        '{"src":"a.txt","dest":"/a.txt","mode":-1,"followSymlink":true,"dirCopyContents":true,'
        '"createDestPath":true,"allowWildcard":true,"allowEmptyWildcard":true,"timestamp":-1}'
    )
    b64 = base64.b64encode(action.encode()).decode()
    assert digest == sha('{"Type":"buildkit.file.v0","Actions":["' + b64 + '"]}')
    # Input 0 is changed: no selector, no content key. Input 1 is the copy source.
    assert set(deps) == {1}
    selector, sels = deps[1]
    assert selector == sha("/a.txt")
    assert sels == [Selector("/a.txt", follow_links=True)]


def test_same_base_name_in_another_directory_gives_the_same_key() -> None:
    a = make_op([pb.FileAction(input=0, secondary_input=1, output=0, copy=dockerfile_copy())], 2)
    b = make_op(
        [pb.FileAction(input=0, secondary_input=1, output=0, copy=dockerfile_copy("/d2/a.txt"))],
        2,
    )
    c = make_op(
        [pb.FileAction(input=0, secondary_input=1, output=0, copy=dockerfile_copy("/d2/g.txt"))],
        2,
    )
    da, sa = file_cache_map(a.file, 2)
    db, sb = file_cache_map(b.file, 2)
    dc, _ = file_cache_map(c.file, 2)
    assert da == db != dc
    assert sa[1][0] != sb[1][0]  # the full path is in the selector


def test_indexes_are_written_unless_the_chain_is_the_default() -> None:
    mk = pb.FileActionMkDir(path="/x", mode=0o755, timestamp=-1)
    scratch = make_op([pb.FileAction(input=-1, secondary_input=-1, output=0, mkdir=mk)], 0)
    digest, _ = file_cache_map(scratch.file, 0)
    body = base64.b64encode(b'{"path":"/x","mode":493,"timestamp":-1}').decode()
    assert digest == sha(
        '{"Type":"buildkit.file.v0","Actions":["' + body + '"],"indexes":[[-1,-1,0]]}'
    )
    on_input = make_op([pb.FileAction(input=0, secondary_input=-1, output=0, mkdir=mk)], 1)
    assert file_cache_map(on_input.file, 1)[0] == sha(
        '{"Type":"buildkit.file.v0","Actions":["' + body + '"]}'
    )


def test_default_chain_test_uses_the_number_of_actions_like_buildkit() -> None:
    mk = pb.FileActionMkDir(path="/x", mode=0o755, timestamp=-1)
    mf = pb.FileActionMkFile(path="/x/f", mode=0o644, data=b"hi", timestamp=-1)
    # Two actions on one input: the second action's input is N + 0 = 1, but BuildKit
    # compares with len(actions) + 0 = 2, so the indexes are written.
    one = make_op(
        [
            pb.FileAction(input=0, secondary_input=-1, output=-1, mkdir=mk),
            pb.FileAction(input=1, secondary_input=-1, output=0, mkfile=mf),
        ],
        1,
    )
    doc_one = file_cache_map(one.file, 1)[0]
    two = make_op(
        [
            pb.FileAction(input=0, secondary_input=-1, output=-1, mkdir=mk),
            pb.FileAction(input=2, secondary_input=-1, output=0, mkfile=mf),
        ],
        2,
    )
    actions = [
        base64.b64encode(b'{"path":"/x","mode":493,"timestamp":-1}').decode(),
        base64.b64encode(b'{"path":"/x/f","mode":420,"data":"aGk=","timestamp":-1}').decode(),
    ]
    plain = '{"Type":"buildkit.file.v0","Actions":["' + '","'.join(actions) + '"]'
    assert doc_one == sha(plain + ',"indexes":[[0,-1,-1],[1,-1,0]]}')
    assert file_cache_map(two.file, 2)[0] == sha(plain + "}")


def test_mkfile_data_mode_owner_and_timestamp_change_the_key() -> None:
    def key(**kw: Any) -> str:
        base: dict[str, Any] = {"path": "/f", "mode": 0o644, "data": b"a", "timestamp": -1}
        base.update(kw)
        act = pb.FileAction(
            input=0, secondary_input=-1, output=0, mkfile=pb.FileActionMkFile(**base)
        )
        return file_cache_map(make_op([act], 1).file, 1)[0]

    keys = {
        key(),
        key(data=b"b"),
        key(mode=0o600),
        key(timestamp=0),
        key(owner=pb.ChownOpt(user=pb.UserOpt(by_id=1000))),
    }
    assert len(keys) == 5


def test_chown_by_name_selects_passwd_and_group_of_the_named_input() -> None:
    cp = dockerfile_copy()
    cp.owner = pb.ChownOpt(user=named("app", 2), group=named("staff", 2))
    op = make_op([pb.FileAction(input=0, secondary_input=1, output=0, copy=cp)], 3)
    _digest, deps = file_cache_map(op.file, 3)
    assert set(deps) == {1, 2}
    selector, sels = deps[2]
    # Paths sorted in descending byte order, joined by a 0 byte.
    assert selector == sha(b"/etc/passwd\0/etc/group")
    assert [s.path for s in sels] == ["/etc/group", "/etc/passwd"]
    assert all(s.follow_links for s in sels)


def test_chown_lookup_in_the_changed_input_adds_no_dependency() -> None:
    cp = dockerfile_copy()
    cp.owner = pb.ChownOpt(user=named("app", 0))
    op = make_op([pb.FileAction(input=0, secondary_input=1, output=0, copy=cp)], 2)
    assert set(file_cache_map(op.file, 2)[1]) == {1}


def test_an_input_that_is_both_source_and_base_is_keyed_by_definition_only() -> None:
    acts = [
        pb.FileAction(input=0, secondary_input=1, output=-1, copy=dockerfile_copy()),
        pb.FileAction(input=1, secondary_input=0, output=0, copy=dockerfile_copy("/b")),
    ]
    op = make_op(acts, 2)
    assert file_cache_map(op.file, 2)[1] == {}


def test_selector_digest_keeps_duplicates_content_selectors_do_not() -> None:
    acts = [
        pb.FileAction(input=0, secondary_input=1, output=-1, copy=dockerfile_copy("/d")),
        pb.FileAction(input=2, secondary_input=1, output=-1, copy=dockerfile_copy("/d")),
        pb.FileAction(input=3, secondary_input=1, output=0, copy=dockerfile_copy("/d/sub")),
    ]
    op = make_op(acts, 2)
    selector, sels = file_cache_map(op.file, 2)[1][1]
    assert selector == sha(b"/d/sub\0/d\0/d")
    assert sels == [Selector("/d", follow_links=True)]


def test_wildcards_and_patterns_are_kept_as_separate_selectors() -> None:
    wild = dockerfile_copy("/src/*.txt")
    pat = dockerfile_copy("/src")
    pat.include_patterns = ["a*"]
    acts = [
        pb.FileAction(input=0, secondary_input=1, output=-1, copy=wild),
        pb.FileAction(input=2, secondary_input=1, output=0, copy=pat),
    ]
    sels = file_cache_map(make_op(acts, 2).file, 2)[1][1][1]
    assert sels == [
        Selector("/src", follow_links=True, includes=("a*",)),
        Selector("/src/*.txt", follow_links=True, wildcard=True),
    ]
    escaped = dockerfile_copy("/src/\\*.txt")
    one = file_cache_map(
        make_op([pb.FileAction(input=0, secondary_input=1, output=0, copy=escaped)], 2).file, 2
    )
    assert one[1][1][1] == [Selector("/src/\\*.txt", follow_links=True)]


def test_dedupe_selectors_drops_nested_and_splits_follow() -> None:
    sels = [
        Selector("/a/b"),
        Selector("/a"),
        Selector("/ab"),
        Selector("/a/c", follow_links=True),
        Selector("/a", follow_links=True),
    ]
    assert dedupe_selectors(sels) == [
        Selector("/a"),
        Selector("/a", follow_links=True),
        Selector("/ab"),
    ]


@pytest.mark.parametrize(
    ("actions", "inputs", "message"),
    [
        ([], 1, "no actions"),
        ([(0, -1, -1)], 1, "no outputs specified"),
        ([(0, -1, 1)], 1, "missing output index 0"),
        ([(0, -1, 0), (0, -1, 0)], 1, "duplicate output 0"),
        ([(5, -1, 0)], 1, "invalid input index 5"),
        ([(2, -1, -1), (1, -1, 0)], 1, "loop from index"),
    ],
)
def test_load_checks(actions: list[tuple[int, int, int]], inputs: int, message: str) -> None:
    mk = pb.FileActionMkDir(path="/x", mode=0o755)
    acts = [pb.FileAction(input=i, secondary_input=s, output=o, mkdir=mk) for i, s, o in actions]
    with pytest.raises(DefinitionError, match=message) as info:
        adapter(make_op(acts, inputs))
    assert info.value.digest == "sha256:" + "f" * 64


def test_negative_user_index_is_rejected() -> None:
    mk = pb.FileActionMkDir(path="/x", mode=0o755, owner=pb.ChownOpt(user=named("u", -1)))
    with pytest.raises(DefinitionError, match="invalid user index -1"):
        adapter(make_op([pb.FileAction(input=0, secondary_input=-1, output=0, mkdir=mk)], 1))


def test_outputs_and_worker() -> None:
    mk = pb.FileActionMkDir(path="/x", mode=0o755)
    acts = [
        pb.FileAction(input=0, secondary_input=-1, output=1, mkdir=mk),
        pb.FileAction(input=1, secondary_input=-1, output=0, mkdir=mk),
    ]
    a = adapter(make_op(acts, 1))
    assert a.num_outputs == 2
    assert a.worker == "local"


def test_keys_are_the_same_for_ops_from_the_fast_decoder() -> None:
    from bkcore.ops.decode import parse_op

    cp = dockerfile_copy("/src/*.txt")
    cp.owner = pb.ChownOpt(user=named("app", 2), group=pb.UserOpt(by_id=0))
    present = pb.ChownOpt()
    present._serialized_on_wire = True  # as a Go client's &ChownOpt{} arrives
    empty_owner = pb.FileActionMkDir(path="/d", mode=0o755, timestamp=-1, owner=present)
    op = make_op(
        [
            pb.FileAction(input=0, secondary_input=1, output=-1, copy=cp),
            pb.FileAction(input=3, secondary_input=-1, output=0, mkdir=empty_owner),
        ],
        3,
    )
    fast = parse_op(bytes(op))
    assert file_cache_map(fast.file, 3) == file_cache_map(op.file, 3)
    # The empty ChownOpt is present on the wire, so it is in the key (as "owner":{}).
    without = make_op(
        [
            pb.FileAction(input=0, secondary_input=1, output=-1, copy=cp),
            pb.FileAction(
                input=3,
                secondary_input=-1,
                output=0,
                mkdir=pb.FileActionMkDir(path="/d", mode=0o755, timestamp=-1),
            ),
        ],
        3,
    )
    assert file_cache_map(without.file, 3)[0] != file_cache_map(fast.file, 3)[0]


def test_plan_runs_needed_actions_in_order_and_commits_only_shared_results() -> None:
    from bkcore.ops.file import plan_file_op

    mk = pb.FileActionMkDir(path="/x", mode=0o755)
    cp = pb.FileActionCopy(src="/x", dest="/y", mode=-1)
    acts = [
        pb.FileAction(input=0, secondary_input=-1, output=-1, mkdir=mk),  # idx 1: chained
        pb.FileAction(input=1, secondary_input=-1, output=-1, mkdir=mk),  # idx 2: used twice
        pb.FileAction(input=2, secondary_input=2, output=0, copy=cp),  # idx 3: output 0
        pb.FileAction(input=-1, secondary_input=-1, output=-1, mkdir=mk),  # idx 4: unused
        pb.FileAction(input=3, secondary_input=-1, output=1, mkdir=mk),  # idx 5: output 1
    ]
    plan = plan_file_op(make_op(acts, 1).file, 1)
    assert plan.outputs == [2, 4]
    assert plan.order == [0, 1, 2, 4]
    assert plan.in_place == {0}
    assert plan.commit == {1, 2, 4}
