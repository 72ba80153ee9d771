"""Go-JSON cache-map documents: the verified examples of spec/solver.md §2."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import betterproto
import pytest

from bkcore.llb import pb
from bkcore.llb.digest import present
from bkcore.llb.dump import load_definition
from bkcore.ops.cachejson import (
    diff_document,
    digest_of,
    exec_document,
    file_action_body,
    file_document,
    go_json,
    go_json_message,
    merge_document,
    source_digest,
)

VECTORS = Path(__file__).resolve().parent.parent / "data" / "vectors"
PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _exec(command: str) -> pb.ExecOp:
    meta = pb.Meta(
        args=["/bin/sh", "-c", command], env=[PATH], cwd="/", remove_mount_stubs_recursive=True
    )
    return pb.ExecOp(meta=meta)


def test_exec_document_run_echo_e18_verified() -> None:
    text = exec_document(_exec("echo e18"), "linux", "amd64")
    assert text == (
        '{"Type":"buildkit.exec.v0","Exec":{"meta":{"args":["/bin/sh","-c","echo e18"],'
        '"env":["' + PATH + '"],"cwd":"/","removeMountStubsRecursive":true}},'
        '"OS":"linux","Arch":"amd64"}'
    )


def test_exec_document_html_escaping_and_variant() -> None:
    text = exec_document(_exec("echo a && echo b > /x"), "linux", "arm64", "v8")
    assert '"echo a \\u0026\\u0026 echo b \\u003e /x"' in text
    assert text.endswith('"OS":"linux","Arch":"arm64","Variant":"v8"}')
    assert json.loads(text)["Exec"]["meta"]["args"][2] == "echo a && echo b > /x"


def test_exec_document_mount_index_fields_always_written() -> None:
    op = _exec("true")
    op.mounts = [
        pb.Mount(input=0, dest="/", output=0),
        pb.Mount(
            input=-1,
            dest="/c",
            output=-1,
            mount_type=pb.MountType(pb.MountType.CACHE),
            cache_opt=pb.CacheOpt(id="c", sharing=pb.CacheSharingOpt(pb.CacheSharingOpt.LOCKED)),
        ),
    ]
    doc = json.loads(exec_document(op, "linux", "amd64"))
    root, cache = doc["Exec"]["mounts"]
    assert root == {"input": 0, "dest": "/", "output": 0}
    assert cache == {
        "input": -1,
        "dest": "/c",
        "output": -1,
        "mountType": 3,
        "cacheOpt": {"ID": "c", "sharing": 2},
    }


def test_copy_action_json_verified() -> None:
    copy = pb.FileActionCopy(
        src="a.txt",
        dest="/a.txt",
        mode=-1,
        follow_symlink=True,
        dir_copy_contents=True,
        create_dest_path=True,
        allow_wildcard=True,
        allow_empty_wildcard=True,
        timestamp=-1,
    )
    action = pb.FileAction(input=0, secondary_input=1, output=0, copy=copy)
    text = go_json_message(file_action_body(action))
    assert text == (
        '{"src":"a.txt","dest":"/a.txt","mode":-1,"followSymlink":true,'
        '"dirCopyContents":true,"createDestPath":true,"allowWildcard":true,'
        '"allowEmptyWildcard":true,"timestamp":-1}'
    )


def test_mkfile_data_is_base64_and_byid_zero_written() -> None:
    owner = pb.ChownOpt(user=pb.UserOpt(by_id=0), group=pb.UserOpt(by_id=1000))
    mkfile = pb.FileActionMkFile(path="/f", mode=0o644, data=b"hi\n", owner=owner, timestamp=-1)
    doc = json.loads(go_json_message(mkfile))
    assert doc["data"] == base64.b64encode(b"hi\n").decode()
    assert doc["owner"] == {"user": {"User": {}}, "group": {"User": {"byID": 1000}}}


def test_file_document_shape_and_optional_indexes() -> None:
    actions = ['{"path":"/a"}', '{"src":"x"}']
    plain = file_document(actions)
    expected_actions = [base64.b64encode(a.encode()).decode() for a in actions]
    assert plain == (
        '{"Type":"buildkit.file.v0","Actions":["' + '","'.join(expected_actions) + '"]}'
    )
    indexed = file_document(actions, [(0, -1, -1), (1, 2, 0)])
    assert indexed.endswith(',"indexes":[[0,-1,-1],[1,2,0]]}')
    assert json.loads(indexed)["Actions"] == expected_actions


def test_file_action_body_requires_a_body() -> None:
    with pytest.raises(ValueError, match="no copy"):
        file_action_body(pb.FileAction(input=0, secondary_input=-1, output=0))


def _v4_ops() -> dict[str, pb.Op]:
    defn = load_definition((VECTORS / "v4_merge_diff.llb").read_bytes(), "v4")
    ops = {}
    for raw in defn.def_:
        op = pb.Op().parse(raw)
        kind, _ = betterproto.which_one_of(op, "op")
        ops[kind] = op
    return ops


def test_merge_and_diff_documents_of_vector_v4() -> None:
    ops = _v4_ops()
    assert merge_document(ops["merge"].merge) == (
        '{"Type":"buildkit.merge.v0","Merge":{"inputs":[{"input":0},{"input":1}]}}'
    )
    assert diff_document(ops["diff"].diff) == (
        '{"Type":"buildkit.diff.v0","Diff":{"lower":{"input":0},"upper":{"input":1}}}'
    )


def test_diff_document_of_scratch_side_built_in_python() -> None:
    diff = pb.DiffOp(lower=present(pb.LowerDiffInput()), upper=pb.UpperDiffInput(input=0))
    diff.lower.input = -1
    assert diff_document(diff) == (
        '{"Type":"buildkit.diff.v0","Diff":{"lower":{"input":-1},"upper":{"input":0}}}'
    )


def test_digest_of_and_source_digest() -> None:
    assert digest_of("abc") == "sha256:" + hashlib.sha256(b"abc").hexdigest()
    assert digest_of(b"abc") == digest_of("abc")
    hexd = hashlib.sha256(b"buildkit.source.v0:docker.io/x@sha256:00").hexdigest()
    assert source_digest("docker.io/x@sha256:00") == "sha256:" + hexd
    local = hashlib.sha256(b"buildkit.source.v0:session:ctx:sha256:11").hexdigest()
    assert source_digest("session:ctx:sha256:11") == "random:" + local


def test_go_json_plain_values() -> None:
    assert go_json({"b": [1, True, None], "a": b"\x00\xff", "s": "\u2028<"}) == (
        '{"b":[1,true,null],"a":"AP8=","s":"\\u2028\\u003c"}'
    )
