"""BuildKit's load checks over a neutral op list (spec/llb.md §1)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from bkcore.errors import DefinitionError
from bkcore.solver.definition import OpSpec, load_graph
from bkcore.solver.types import CacheMap, OpContext, Result


class Op:
    def __init__(self, outputs: int = 1) -> None:
        self.outputs = outputs

    @property
    def num_outputs(self) -> int:
        return self.outputs

    @property
    def worker(self) -> str:
        return "w"

    async def cache_map(self, ctx: OpContext, index: int) -> tuple[CacheMap, bool]:
        raise AssertionError("not called")

    async def exec(self, ctx: OpContext, inputs: Sequence[Result]) -> list[Result]:
        raise AssertionError("not called")


def test_builds_the_graph_from_the_terminal_op() -> None:
    src, run = Op(), Op(outputs=2)
    vertex, index = load_graph(
        [
            OpSpec("s", (), src, name="src"),
            OpSpec("r", (("s", 0),), run, name="run", ignore_cache=True),
            OpSpec("s", (), src),  # duplicates are dropped
            OpSpec("t", (("r", 1),)),
        ]
    )
    assert index == 1
    assert vertex.digest == "r" and vertex.op is run and vertex.ignore_cache
    assert vertex.name == "run"
    ((inp, out),) = vertex.inputs
    assert inp.digest == "s" and inp.op is src and out == 0 and inp.inputs == ()


def test_shared_inputs_become_one_vertex() -> None:
    vertex, _ = load_graph(
        [
            OpSpec("s", (), Op()),
            OpSpec("a", (("s", 0),), Op()),
            OpSpec("b", (("s", 0), ("a", 0)), Op()),
            OpSpec("t", (("b", 0),)),
        ]
    )
    s_direct = vertex.inputs[0][0]
    s_via_a = vertex.inputs[1][0].inputs[0][0]
    assert s_direct is s_via_a


def check(specs: list[OpSpec], message: str, digest: str | None) -> None:
    with pytest.raises(DefinitionError) as info:
        load_graph(specs)
    assert message in str(info.value)
    assert info.value.digest == digest


def test_empty() -> None:
    check([], "no ops", None)


def test_fewer_than_two_ops_after_dedup() -> None:
    check([OpSpec("t", (("t", 0),))], "invalid LLB with 1 vertexes", "t")
    check([OpSpec("s", (), Op()), OpSpec("s", (), Op())], "invalid LLB with 1 vertexes", "s")


def test_terminal_op_needs_an_input() -> None:
    check([OpSpec("s", (), Op()), OpSpec("t", ())], "terminal op has no inputs", "t")


def test_last_op_must_be_terminal() -> None:
    check([OpSpec("s", (), Op()), OpSpec("x", (("s", 0),), Op())], "not a terminal op", "x")


def test_missing_input_digest() -> None:
    specs = [OpSpec("a", (("zz", 0),), Op()), OpSpec("t", (("a", 0),))]
    check(specs, "invalid missing input digest zz", "a")


def test_output_index_out_of_range() -> None:
    specs = [OpSpec("s", (), Op()), OpSpec("a", (("s", 1),), Op()), OpSpec("t", (("a", 0),))]
    check(specs, "invalid output index 1", "a")
    check([OpSpec("s", (), Op()), OpSpec("t", (("s", -1),))], "invalid output index -1", "t")


def test_op_without_operation() -> None:
    specs = [OpSpec("s", ()), OpSpec("a", (("s", 0),), Op()), OpSpec("t", (("a", 0),))]
    check(specs, "op has no operation", "s")


def test_cycle() -> None:
    specs = [
        OpSpec("a", (("b", 0),), Op()),
        OpSpec("b", (("a", 0),), Op()),
        OpSpec("t", (("a", 0),)),
    ]
    with pytest.raises(DefinitionError, match="cycle") as info:
        load_graph(specs)
    assert info.value.digest in {"a", "b"}


def test_long_chain_needs_no_recursion() -> None:
    specs = [OpSpec("0", (), Op())]
    specs += [OpSpec(str(i), ((str(i - 1), 0),), Op()) for i in range(1, 5000)]
    specs.append(OpSpec("t", (("4999", 0),)))
    vertex, _ = load_graph(specs)
    depth = 0
    while vertex.inputs:
        vertex = vertex.inputs[0][0]
        depth += 1
    assert depth == 4999
