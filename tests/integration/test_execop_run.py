"""ExecOpAdapter with real runc containers on real snapshots (root, runc, busybox-static)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bkcore.cache.mount import mount_points_under
from bkcore.cache.results import SnapshotResult, commit_result, results_for
from bkcore.cache.store import CacheStore
from bkcore.engine import Engine
from bkcore.errors import ExecError, SolveError
from bkcore.llb import pb
from bkcore.llb.digest import marshal, present
from bkcore.ops.exec import ExecOpAdapter
from bkcore.ops.execmounts import CACHE_DROPS, SECRETS_DIR
from bkcore.pluginmanager import BkPluginManager
from bkcore.progress import LogEvent, ProgressStream, SharedProgress, VertexEvent
from bkcore.session import Session, SessionManager
from bkcore.sessions.secrets import SecretsProvider
from bkcore.sessions.sshforward import SSHProvider
from bkcore.solver.types import JobInfo, OpContext, Result, Vertex
from bkcore.workers.runc import RuncWorker

BUSYBOX = "/bin/busybox"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("runc") is None, reason="runc binary not installed"),
    pytest.mark.skipif(not os.path.exists(BUSYBOX), reason="busybox-static not installed"),
    pytest.mark.skipif(os.geteuid() != 0, reason="runc containers and overlay mounts need root"),
]

PASSWD = "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000:Alice:/home/alice:/bin/sh\n"
GROUP = "root:x:0:\nalice:x:1000:\n"


def populate_rootfs(path: Path) -> None:
    """busybox with every applet in /bin, /etc/passwd and /etc/group, /tmp 1777."""
    (path / "bin").mkdir()
    (path / "etc").mkdir()
    (path / "tmp").mkdir()
    os.chmod(path / "tmp", 0o1777)
    shutil.copy2(BUSYBOX, path / "bin" / "busybox")
    applets = subprocess.run(
        [BUSYBOX, "--list"], check=True, capture_output=True, text=True
    ).stdout.split()
    for applet in applets:
        if applet != "busybox":
            (path / "bin" / applet).symlink_to("busybox")
    (path / "etc" / "passwd").write_text(PASSWD)
    (path / "etc" / "group").write_text(GROUP)


@dataclass
class Harness:
    store: CacheStore
    engine: Engine
    session: Session
    stream: ProgressStream = field(default_factory=ProgressStream)
    owned: list[Result] = field(default_factory=list)

    async def snapshot(self, fill: Callable[[Path], None]) -> SnapshotResult:
        """A committed snapshot made by ``fill(dir)`` on an empty tree."""
        mutable = await asyncio.to_thread(self.store.snapshots.prepare, None, "test")
        root = await asyncio.to_thread(mutable.mount)
        await asyncio.to_thread(fill, root)
        result = await commit_result(self.store, mutable)
        self.owned.append(result)
        return result

    def adapter(
        self, mounts: Sequence[pb.Mount], args: Sequence[str], num_inputs: int = 1, **kw: Any
    ) -> ExecOpAdapter:
        meta = pb.Meta(args=list(args), cwd=kw.pop("cwd", "/"))
        for key in ("env", "user", "hostname"):
            if key in kw:
                setattr(meta, key, kw.pop(key))
        exec_op = pb.ExecOp(meta=meta, mounts=list(mounts), **kw)
        op = pb.Op(
            inputs=[pb.Input(digest=f"sha256:{i:064x}", index=0) for i in range(num_inputs)],
            exec=exec_op,
        )
        op = pb.Op().parse(marshal(op))
        return ExecOpAdapter(op, "sha256:" + "e" * 64, self.engine, None)

    def ctx(
        self,
        adapter: ExecOpAdapter,
        *,
        ignore_cache: bool = False,
        values: dict[str, object] | None = None,
    ) -> OpContext:
        vertex = Vertex(adapter.digest, adapter, name="test exec", ignore_cache=ignore_cache)
        progress = SharedProgress(VertexEvent(adapter.digest, "test exec"))
        progress.add(self.stream)
        jobs = [JobInfo("job1", {"session": self.session.id, **(values or {})})]
        return OpContext(vertex, progress, lambda: jobs)

    async def run(
        self,
        adapter: ExecOpAdapter,
        inputs: Sequence[Result],
        *,
        ignore_cache: bool = False,
        values: dict[str, object] | None = None,
    ) -> list[Result]:
        ctx = self.ctx(adapter, ignore_cache=ignore_cache, values=values)
        outputs = await adapter.exec(ctx, inputs)
        self.owned.extend(outputs)
        return outputs

    async def read(self, result: Result, path: str) -> bytes:
        def read() -> bytes:
            with self.store.snapshots.view(result.id) as root:
                return (root / path.lstrip("/")).read_bytes()

        return await asyncio.to_thread(read)

    async def exists(self, result: Result, path: str) -> bool:
        def check() -> bool:
            with self.store.snapshots.view(result.id) as root:
                return os.path.lexists(root / path.lstrip("/"))

        return await asyncio.to_thread(check)

    def logs(self) -> bytes:
        reader_events = self._events
        return b"".join(e.data for e in reader_events if isinstance(e, LogEvent))

    _events: list[object] = field(default_factory=list)


@asynccontextmanager
async def harness(
    tmp_path: Path,
    *,
    secrets: dict[str, bytes] | None = None,
    ssh: dict[str, str] | None = None,
    driver: str | None = None,
) -> AsyncIterator[Harness]:
    store = await asyncio.to_thread(CacheStore.open, tmp_path / "store", driver)
    worker = RuncWorker.for_root(tmp_path / "state", snapshotter=store.driver)
    sessions = SessionManager()
    session = Session()
    session.allow(SecretsProvider(secrets or {}))
    if ssh is not None:
        session.allow(SSHProvider(ssh))
    sessions.attach(session)
    engine = Engine(store, worker, sessions, BkPluginManager())
    h = Harness(store, engine, session)
    reader = h.stream.subscribe()
    try:
        yield h
    finally:
        h._events.extend(reader.read_nowait())
        for result in h.owned:
            await result.release()
        await results_for(store).close()
        await sessions.close()
        store.close()


def root_mount(output: int = 0, **kw: Any) -> pb.Mount:
    return pb.Mount(input=0, dest="/", output=output, **kw)


def sh(script: str) -> list[str]:
    return ["/bin/sh", "-c", script]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def assert_clean(h: Harness, snapshots_before: int) -> None:
    """No active snapshot, no extra committed snapshot, no mount left in the store."""
    rows = h.store.snapshots.all()
    assert [r.id for r in rows if r.state == "active"] == []
    assert len(rows) == snapshots_before
    assert mount_points_under(h.store.root) == []
    secrets_dir = h.store.root / SECRETS_DIR
    assert not secrets_dir.exists() or list(secrets_dir.iterdir()) == []


def test_run_commits_rootfs_output_and_streams_logs(tmp_path: Path) -> None:
    async def main() -> None:
        async with harness(tmp_path) as h:
            base = await h.snapshot(populate_rootfs)
            adapter = h.adapter(
                [root_mount()],
                sh("echo hello; echo oops >&2; echo built >/tmp/out; id -u >/tmp/uid; pwd >/tmp/d"),
                cwd="/work",
                user="alice",
                env=["GREETING=hi"],
            )
            assert adapter.num_outputs == 1
            (out,) = await h.run(adapter, [base])
            assert out.id != base.id
            assert await h.read(out, "/tmp/out") == b"built\n"
            assert await h.read(out, "/tmp/uid") == b"1000\n"
            assert await h.read(out, "/tmp/d") == b"/work\n"
            assert not await h.exists(base, "/tmp/out")
            assert mount_points_under(h.store.root) == []
        logs = h.logs()
        assert b"hello\n" in logs and b"oops\n" in logs

    asyncio.run(main())


def test_env_hostname_and_scratch_readonly_root(tmp_path: Path) -> None:
    async def main() -> None:
        async with harness(tmp_path) as h:
            base = await h.snapshot(populate_rootfs)
            adapter = h.adapter(
                [root_mount(), pb.Mount(input=-1, dest="/out", output=1)],
                sh('echo "$GREETING $(hostname)" > /out/env'),
                env=["GREETING=hi"],
                hostname="box1",
            )
            root, out = await h.run(adapter, [base])
            assert await h.read(out, "/env") == b"hi box1\n"
            assert not await h.exists(root, "/out/env")

    asyncio.run(main())


@pytest.mark.parametrize("driver", ["overlayfs", "copy"])
def test_failure_raises_exec_error_and_leaves_nothing(tmp_path: Path, driver: str) -> None:
    async def main() -> None:
        async with harness(tmp_path, driver=driver) as h:
            base = await h.snapshot(populate_rootfs)
            before = len(h.store.snapshots.all())
            adapter = h.adapter(
                [root_mount(), pb.Mount(input=-1, dest="/o", output=1)],
                sh("echo first; echo last-line; touch /o/x; exit 3"),
            )
            with pytest.raises(ExecError) as info:
                await h.run(adapter, [base])
            err = info.value
            assert err.exit_code == 3
            assert err.argv == sh("echo first; echo last-line; touch /o/x; exit 3")
            assert err.output_tail[-1] == "last-line"
            assert err.digest == adapter.digest
            assert "exit code: 3" in str(err)
            assert_clean(h, before)

    asyncio.run(main())


@pytest.mark.parametrize("driver", ["overlayfs", "copy"])
def test_bind_mounts_selectors_and_outputs_in_mount_order(tmp_path: Path, driver: str) -> None:
    def src(d: Path) -> None:
        (d / "sub").mkdir()
        (d / "sub" / "data.txt").write_text("payload\n")
        (d / "sub" / "escape").symlink_to("../../../../..")
        (d / "top.txt").write_text("top\n")

    async def main() -> None:
        async with harness(tmp_path, driver=driver) as h:
            base = await h.snapshot(populate_rootfs)
            data = await h.snapshot(src)
            mounts = [
                root_mount(output=-1, readonly=False),
                pb.Mount(input=1, dest="/ro", output=-1, readonly=True, selector="sub"),
                pb.Mount(input=1, dest="/rw", output=0),
                pb.Mount(input=1, dest="/scratch", output=-1),
                pb.Mount(input=-1, dest="/tmpfs", output=-1, mount_type=pb.MountType.TMPFS),
            ]
            script = (
                "cat /ro/data.txt > /rw/copied; "
                "ls /ro/escape/ > /rw/escape-listing; "
                "touch /ro/x 2> /dev/null && echo writable > /rw/ro-state || "
                "echo readonly > /rw/ro-state; "
                "echo s > /scratch/s; "
                "grep -q ' /tmpfs tmpfs ' /proc/mounts && echo tmpfs > /rw/tmpfs-state; "
                "echo root > /rootfile"
            )
            adapter = h.adapter(mounts, sh(script), num_inputs=2)
            assert adapter.num_outputs == 1
            (rw,) = await h.run(adapter, [base, data])
            assert await h.read(rw, "/copied") == b"payload\n"
            assert await h.read(rw, "/ro-state") == b"readonly\n"
            assert await h.read(rw, "/tmpfs-state") == b"tmpfs\n"
            assert await h.read(rw, "/top.txt") == b"top\n"
            # a symlink in a mounted tree resolves inside the container, never on the host
            listing = (await h.read(rw, "/escape-listing")).split()
            assert b"ro" in listing and b"rw" in listing and b"work" not in listing
            assert not await h.exists(rw, "/s")
            assert not await h.exists(data, "/copied")

    asyncio.run(main())


def test_selector_escape_is_confined_to_the_input(tmp_path: Path) -> None:
    def src(d: Path) -> None:
        (d / "link").symlink_to("/../../etc")
        (d / "etc").mkdir()
        (d / "etc" / "mine").write_text("inside\n")

    async def main() -> None:
        async with harness(tmp_path) as h:
            base = await h.snapshot(populate_rootfs)
            data = await h.snapshot(src)
            adapter = h.adapter(
                [
                    root_mount(),
                    pb.Mount(input=1, dest="/m", output=-1, readonly=True, selector="link"),
                ],
                sh("ls /m > /listing"),
                num_inputs=2,
            )
            (out,) = await h.run(adapter, [base, data])
            assert (await h.read(out, "/listing")).split() == [b"mine"]
            missing = h.adapter(
                [
                    root_mount(),
                    pb.Mount(input=1, dest="/m", output=-1, readonly=True, selector="nope"),
                ],
                sh("true"),
                num_inputs=2,
            )
            with pytest.raises(SolveError, match="nope not found"):
                await h.run(missing, [base, data])

    asyncio.run(main())


def cache_mount(dest: str, cache_id: str, sharing: int = 0, input: int = -1) -> pb.Mount:
    return pb.Mount(
        input=input,
        dest=dest,
        output=-1,
        mount_type=pb.MountType.CACHE,
        cache_opt=present(pb.CacheOpt(id=cache_id, sharing=pb.CacheSharingOpt(sharing))),
    )


def test_cache_mount_persists_and_no_cache_drops_it(tmp_path: Path) -> None:
    async def main() -> None:
        async with harness(tmp_path) as h:
            base = await h.snapshot(populate_rootfs)
            script = sh("echo x >> /c/count; wc -l < /c/count > /n")
            adapter = h.adapter([root_mount(), cache_mount("/c", "counter")], script)
            (first,) = await h.run(adapter, [base])
            (second,) = await h.run(adapter, [base])
            assert (await h.read(first, "/n")).strip() == b"1"
            assert (await h.read(second, "/n")).strip() == b"2"
            assert not await h.exists(second, "/c/count")
            (fresh,) = await h.run(adapter, [base], ignore_cache=True)
            assert (await h.read(fresh, "/n")).strip() == b"1"
            # writes of a failing step are kept
            failing = h.adapter(
                [root_mount(), cache_mount("/c", "counter", sharing=2)],
                sh("echo x >> /c/count; exit 1"),
            )
            with pytest.raises(ExecError):
                await h.run(failing, [base])
            (after,) = await h.run(adapter, [base])
            assert (await h.read(after, "/n")).strip() == b"3"

    asyncio.run(main())


def test_no_cache_empties_a_cache_mount_once_per_build(tmp_path: Path) -> None:
    """spec/solver.md §3.3: ids are dropped before the build -- a second ignore_cache step of
    the same build (job) sees what the first wrote (conformance 016 with --no-cache); the next
    build starts empty again."""

    async def main() -> None:
        async with harness(tmp_path) as h:
            base = await h.snapshot(populate_rootfs)
            script = sh("echo x >> /c/count; wc -l < /c/count > /n")
            adapter = h.adapter([root_mount(), cache_mount("/c", "once")], script)
            await h.run(adapter, [base])  # a cached build left one line
            build1: dict[str, object] = {CACHE_DROPS: {}}
            (a,) = await h.run(adapter, [base], ignore_cache=True, values=build1)
            (b,) = await h.run(adapter, [base], ignore_cache=True, values=build1)
            assert (await h.read(a, "/n")).strip() == b"1"
            assert (await h.read(b, "/n")).strip() == b"2"
            build2: dict[str, object] = {CACHE_DROPS: {}}
            (c,) = await h.run(adapter, [base], ignore_cache=True, values=build2)
            assert (await h.read(c, "/n")).strip() == b"1"

    asyncio.run(main())


def test_cache_mount_seeded_from_input(tmp_path: Path) -> None:
    def seed(d: Path) -> None:
        (d / "cache").mkdir()
        (d / "cache" / "seeded").write_text("from input\n")

    async def main() -> None:
        async with harness(tmp_path) as h:
            base = await h.snapshot(populate_rootfs)
            seed_res = await h.snapshot(seed)
            mount = cache_mount("/c", "seeded", input=1)
            mount.selector = "cache"
            adapter = h.adapter(
                [root_mount(), mount], sh("cat /c/seeded > /got; echo more >> /c/seeded"), 2
            )
            (out,) = await h.run(adapter, [base, seed_res])
            assert await h.read(out, "/got") == b"from input\n"
            (again,) = await h.run(adapter, [base, seed_res])
            assert await h.read(again, "/got") == b"from input\nmore\n"

    asyncio.run(main())


def test_secrets_mounted_from_tmpfs_and_never_stored(tmp_path: Path) -> None:
    value = b"s3cr3t-value-4711"

    async def main() -> None:
        async with harness(tmp_path, secrets={"token": value, "env": b"envsecret"}) as h:
            base = await h.snapshot(populate_rootfs)
            before = len(h.store.snapshots.all())
            secret = pb.Mount(
                input=-1,
                dest="/run/secrets/token",
                output=-1,
                mount_type=pb.MountType.SECRET,
                secret_opt=present(pb.SecretOpt(id="token", uid=1000, gid=1000, mode=0o400)),
            )
            optional = pb.Mount(
                input=-1,
                dest="/run/secrets/absent",
                output=-1,
                mount_type=pb.MountType.SECRET,
                secret_opt=present(pb.SecretOpt(id="absent", optional=True)),
            )
            script = (
                "stat -c '%u:%g %a' /run/secrets/token > /meta; "
                "grep -c ' /run/secrets/token tmpfs ro' /proc/mounts > /fstype; "
                "test -e /run/secrets/absent || echo no > /absent; "
                # compared by digest: the command itself is recorded (snapshot descriptions,
                # as BuildKit's), so it must not carry the values this test looks for
                f'test "$(sha256sum < /run/secrets/token)" = "{sha(value)}  -" '
                "&& echo ok > /match; "
                f'test "$(printf %s "$TOKEN" | sha256sum)" = "{sha(b"envsecret")}  -" '
                "&& echo ok > /envmatch"
            )
            adapter = h.adapter(
                [root_mount(), secret, optional],
                sh(script),
                secretenv=[pb.SecretEnv(id="env", name="TOKEN")],
            )
            (out,) = await h.run(adapter, [base])
            assert await h.read(out, "/meta") == b"1000:1000 400\n"
            assert await h.read(out, "/fstype") == b"1\n"
            assert await h.read(out, "/absent") == b"no\n"
            assert await h.read(out, "/match") == b"ok\n"
            assert await h.read(out, "/envmatch") == b"ok\n"
            assert not await h.exists(out, "/run")  # mount stubs removed recursively
            assert_clean(h, before + 1)
            required = pb.Mount(
                input=-1,
                dest="/s",
                output=-1,
                mount_type=pb.MountType.SECRET,
                secret_opt=present(pb.SecretOpt(id="missing")),
            )
            with pytest.raises(SolveError, match="secret missing: not found"):
                await h.run(h.adapter([root_mount(), required], sh("true")), [base])
        store_root = tmp_path / "store"
        for secret_value in (value.decode(), "envsecret"):
            found = subprocess.run(
                ["grep", "-rl", secret_value, str(store_root)], capture_output=True
            )
            assert found.stdout == b"", secret_value

    asyncio.run(main())


def test_ssh_socket_is_forwarded_with_owner_and_mode(tmp_path: Path) -> None:
    async def main() -> None:
        agent_path = tmp_path / "agent.sock"
        got: list[bytes] = []

        async def agent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            got.append(await reader.read(100))
            writer.write(b"pong")
            await writer.drain()
            writer.close()

        server = await asyncio.start_unix_server(agent, str(agent_path))
        try:
            async with harness(tmp_path, ssh={"default": str(agent_path)}) as h:
                base = await h.snapshot(populate_rootfs)
                ssh = pb.Mount(
                    input=-1,
                    dest="/run/buildkit/ssh_agent.0",
                    output=-1,
                    mount_type=pb.MountType.SSH,
                    ssh_opt=present(pb.SshOpt(id="default", uid=1000, mode=0o600)),
                )
                adapter = h.adapter(
                    [root_mount(), ssh],
                    sh(
                        "stat -c '%u %a' /run/buildkit/ssh_agent.0 > /meta; "
                        "test -S /run/buildkit/ssh_agent.0 && echo sock > /kind"
                    ),
                )
                (out,) = await h.run(adapter, [base])
                assert await h.read(out, "/meta") == b"1000 600\n"
                assert await h.read(out, "/kind") == b"sock\n"
                missing = pb.Mount(
                    input=-1,
                    dest="/run/x",
                    output=-1,
                    mount_type=pb.MountType.SSH,
                    ssh_opt=present(pb.SshOpt(id="other")),
                )
                with pytest.raises(SolveError, match="no SSH agent other forwarded"):
                    await h.run(h.adapter([root_mount(), missing], sh("true")), [base])
        finally:
            server.close()
            await server.wait_closed()

    asyncio.run(main())


def test_cancellation_kills_the_process_and_leaves_nothing(tmp_path: Path) -> None:
    async def main() -> None:
        async with harness(tmp_path) as h:
            base = await h.snapshot(populate_rootfs)
            before = len(h.store.snapshots.all())
            adapter = h.adapter(
                [
                    root_mount(),
                    cache_mount("/c", "cancel"),
                    pb.Mount(input=-1, dest="/o", output=1),
                ],
                sh("echo started; echo before > /c/mark; sleep 30; echo after > /c/mark"),
            )
            ctx = h.ctx(adapter)
            reader = h.stream.subscribe()
            task = asyncio.create_task(adapter.exec(ctx, [base]))
            while True:
                batch = await asyncio.wait_for(reader.next_batch(), 20)
                if any(isinstance(e, LogEvent) and b"started" in e.data for e in batch):
                    break
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert_clean(h, before)
            listed = subprocess.run(
                ["runc", "--root", str(tmp_path / "state" / "runc"), "list", "-q"],
                capture_output=True,
                text=True,
            )
            assert listed.stdout.split() == []
            # the cache mount keeps the write made before the cancel
            check = h.adapter(
                [root_mount(), cache_mount("/c", "cancel")], sh("cat /c/mark > /mark")
            )
            (out,) = await h.run(check, [base])
            assert await h.read(out, "/mark") == b"before\n"

    asyncio.run(main())


def test_content_key_follows_selected_paths(tmp_path: Path) -> None:
    async def main() -> None:
        async with harness(tmp_path) as h:

            def tree(other: str, inside: str) -> Callable[[Path], None]:
                def fill(d: Path) -> None:
                    (d / "sel").mkdir()
                    (d / "sel" / "f").write_text(inside)
                    (d / "other").write_text(other)

                return fill

            a = await h.snapshot(tree("1", "same"))
            b = await h.snapshot(tree("2", "same"))
            c = await h.snapshot(tree("1", "different"))
            adapter = h.adapter(
                [
                    root_mount(),
                    pb.Mount(input=1, dest="/m", output=-1, readonly=True, selector="sel"),
                ],
                sh("true"),
                num_inputs=2,
            )
            cmap, last = await adapter.cache_map(h.ctx(adapter), 0)
            assert last
            assert cmap.deps[0].compute_digest is None
            compute = cmap.deps[1].compute_digest
            assert compute is not None
            assert cmap.deps[1].selector.startswith("sha256:")
            ka, kb, kc = [await compute(r) for r in (a, b, c)]
            assert ka == kb != kc
            assert mount_points_under(h.store.root) == []

    asyncio.run(main())


def test_recover_removes_secret_tmpfs_of_dead_processes(tmp_path: Path) -> None:
    from bkcore.cache.mount import Mount, mount
    from bkcore.cache.procs import me
    from bkcore.ops.execmounts import recover_secret_dirs

    base = tmp_path / SECRETS_DIR
    dead = base / "999999999-1-abc"
    mine = base / "{}-{}-def".format(*me())
    for d in (dead, mine):
        d.mkdir(parents=True)
        mount(Mount("tmpfs", "tmpfs", ("mode=700",)), d)
        (d / "secret").write_text("x")
    try:
        assert recover_secret_dirs(tmp_path) == [dead.name]
        assert not dead.exists()
        assert (mine / "secret").read_text() == "x"
    finally:
        from bkcore.cache.mount import unmount_all_under

        unmount_all_under(base)
