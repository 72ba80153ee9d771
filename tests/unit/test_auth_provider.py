"""Registry credentials through the session: the client-side Auth attachable (Docker config,
credential helpers) and the daemon side (get_credentials, session_credentials,
registry_client per engine)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from bkcore.errors import SessionError
from bkcore.pluginmanager import BkPluginManager
from bkcore.session import InProcessCaller, Session, SessionManager, Status
from bkcore.session.auth import (
    CREDENTIALS,
    FETCH_TOKEN,
    GET_TOKEN_AUTHORITY,
    CredentialsRequest,
    CredentialsResponse,
    FetchTokenRequest,
    FetchTokenResponse,
    get_credentials,
    registry_client,
    session_credentials,
)
from bkcore.session.transport import CallError
from bkcore.sessions.auth.dockerconfig import DockerConfig
from bkcore.sessions.auth.provider import AuthProvider


def write_config(directory: Path, doc: dict[str, object]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(doc))
    return directory


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def helper_script(bin_dir: Path, name: str, answers: dict[str, dict[str, str]]) -> Path:
    """A ``docker-credential-<name>`` (Python) answering ``get`` from ``answers``; it logs
    each host asked to ``<bin_dir>/<name>.log``."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    path = bin_dir / f"docker-credential-{name}"
    log = bin_dir / f"{name}.log"
    path.write_text(
        f"#!{sys.executable}\n"
        "import json, sys\n"
        f"answers = {answers!r}\n"
        "assert sys.argv[1:] == ['get'], sys.argv\n"
        "host = sys.stdin.read().strip()\n"
        f"open({str(log)!r}, 'a').write(host + '\\n')\n"
        "if host not in answers:\n"
        "    print('credentials not found in native keychain'); sys.exit(1)\n"
        "print(json.dumps(answers[host]))\n"
    )
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def ask(provider: AuthProvider, host: str) -> tuple[str, str]:
    async def main() -> tuple[str, str]:
        caller = _caller(provider)
        resp = await caller.call_unary(
            CREDENTIALS, CredentialsRequest(host=host), CredentialsResponse
        )
        return resp.username, resp.secret

    return asyncio.run(main())


def _caller(provider: AuthProvider) -> InProcessCaller:
    session = Session()
    session.allow(provider)
    return session.caller()


# -- Docker config lookups -----------------------------------------------------------------------
def test_auths_forms(tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path / "docker",
        {
            "auths": {
                "reg.a:5000": {"auth": b64("alice:pw:with:colons")},
                "reg.b": {"username": "bob", "password": "bpw"},
                "https://reg.c/v1/": {"auth": b64("carol:cpw")},
                "reg.d": {"auth": b64("dave:dpw"), "identitytoken": "id-token-d"},
                "https://index.docker.io/v1/": {"auth": b64("hubuser:hubpw")},
                "reg.e": {},
            }
        },
    )
    provider = AuthProvider(cfg)
    assert ask(provider, "reg.a:5000") == ("alice", "pw:with:colons")
    assert ask(provider, "reg.b") == ("bob", "bpw")
    assert ask(provider, "reg.c") == ("carol", "cpw")  # URL keys match by host
    assert ask(provider, "reg.d") == ("", "id-token-d")  # identity token, empty user
    assert ask(provider, "registry-1.docker.io") == ("hubuser", "hubpw")
    assert ask(provider, "reg.e") == ("", "")
    assert ask(provider, "unknown.example") == ("", "")


@pytest.mark.parametrize("key", ["docker.io", "index.docker.io", "https://index.docker.io/v1/"])
def test_docker_hub_aliases(tmp_path: Path, key: str) -> None:
    cfg = write_config(tmp_path / "d", {"auths": {key: {"auth": b64("u:p")}}})
    assert ask(AuthProvider(cfg), "registry-1.docker.io") == ("u", "p")


def test_docker_config_env_and_missing_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = write_config(tmp_path / "env", {"auths": {"r:1": {"auth": b64("e:f")}}})
    monkeypatch.setenv("DOCKER_CONFIG", str(cfg))
    assert ask(AuthProvider(), "r:1") == ("e", "f")
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "none"))
    assert ask(AuthProvider(), "r:1") == ("", "")
    monkeypatch.delenv("DOCKER_CONFIG")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    write_config(tmp_path / "home" / ".docker", {"auths": {"r:1": {"auth": b64("h:i")}}})
    assert ask(AuthProvider(), "r:1") == ("h", "i")


def test_bad_config_is_one_error_naming_the_file_not_the_secret(tmp_path: Path) -> None:
    cfg = tmp_path / "bad"
    cfg.mkdir()
    (cfg / "config.json").write_text('{"auths": {\n"r:1": {"auth": "c2VjcmV0"\n')
    with pytest.raises(CallError) as info:
        ask(AuthProvider(cfg), "r:1")
    assert info.value.code == Status.UNKNOWN
    assert f"{cfg / 'config.json'}:" in info.value.message
    assert "not valid JSON" in info.value.message
    write_config(cfg, {"auths": {"r:1": {"auth": "!!notbase64-secretvalue"}}})
    with pytest.raises(CallError, match="auths entry for r:1: invalid auth") as info2:
        ask(AuthProvider(cfg), "r:1")
    assert "secretvalue" not in str(info2.value)


def test_credential_helpers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    helper_script(
        bin_dir,
        "special",
        {"reg.h:5000": {"ServerURL": "reg.h:5000", "Username": "hank", "Secret": "hpw"}},
    )
    helper_script(
        bin_dir,
        "store",
        {
            "https://index.docker.io/v1/": {"Username": "<token>", "Secret": "hub-identity"},
            "reg.s": {"Username": "sam", "Secret": "spw"},
        },
    )
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    cfg = write_config(
        tmp_path / "d",
        {
            "credHelpers": {"reg.h:5000": "special"},
            "credsStore": "store",
            "auths": {"reg.s": {"auth": b64("ignored:because-store")}},
        },
    )
    provider = AuthProvider(cfg)
    assert ask(provider, "reg.h:5000") == ("hank", "hpw")
    assert ask(provider, "reg.h:5000") == ("hank", "hpw")  # remembered: helper ran once
    assert (bin_dir / "special.log").read_text() == "reg.h:5000\n"
    assert ask(provider, "registry-1.docker.io") == ("", "hub-identity")
    assert ask(provider, "reg.s") == ("sam", "spw")  # the store wins over auths
    assert ask(provider, "nothing.here") == ("", "")  # "not found" means anonymous
    assert "https://index.docker.io/v1/" in (bin_dir / "store.log").read_text()


def test_missing_helper_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    cfg = write_config(tmp_path / "d", {"credsStore": "nosuchhelper"})
    with pytest.raises(CallError, match="docker-credential-nosuchhelper not found on PATH"):
        ask(AuthProvider(cfg), "reg.x")


def test_token_methods_are_unimplemented(tmp_path: Path) -> None:
    caller = _caller(AuthProvider(tmp_path))

    async def main() -> None:
        for method in (FETCH_TOKEN, GET_TOKEN_AUTHORITY):
            with pytest.raises(CallError) as info:
                await caller.call_unary(method, FetchTokenRequest(host="h"), FetchTokenResponse)
            assert info.value.code == Status.UNIMPLEMENTED

    asyncio.run(main())


def test_reprs_hide_secrets(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "d", {"auths": {"r:1": {"auth": b64("u:topsecret")}}})
    config = DockerConfig.load(cfg)
    entry = config.stored("r:1")
    assert entry is not None and "topsecret" not in repr(entry)
    assert "topsecret" not in repr(CredentialsResponse(username="u", secret="topsecret"))
    provider = AuthProvider(cfg)
    ask(provider, "r:1")
    assert "topsecret" not in repr(provider)


# -- daemon side -----------------------------------------------------------------------------------
def test_plugin_registers_the_auth_attachable(tmp_path: Path) -> None:
    pm = BkPluginManager()
    pm.load_builtins()
    registry = pm.registry("attachables")
    assert "auth" in registry
    factory = registry.load("auth")
    assert isinstance(factory(), AuthProvider)  # the controller calls it with no arguments


def test_get_credentials_and_session_group(tmp_path: Path) -> None:
    first = write_config(tmp_path / "one", {"auths": {"only.one": {"auth": b64("o:1")}}})
    second = write_config(
        tmp_path / "two",
        {"auths": {"only.one": {"auth": b64("x:x")}, "reg.two": {"auth": b64("t:2")}}},
    )

    async def main() -> None:
        manager = SessionManager()
        plain = Session()  # no auth attachable: anonymous
        one, two = Session(), Session()
        one.allow(AuthProvider(first))
        two.allow(AuthProvider(second))
        for s in (plain, one, two):
            manager.attach(s)
        assert await get_credentials(plain.caller(), "only.one") is None
        assert await get_credentials(one.caller(), "only.one") == ("o", "1")
        creds = session_credentials(manager, ["gone-session", plain.id, one.id, two.id])
        assert await creds("only.one") == ("o", "1")  # first session with an answer
        assert await creds("reg.two") == ("t", "2")
        assert await creds("reg.none") is None
        await manager.close()

    asyncio.run(main())


def test_session_errors_surface_as_session_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text("[1, 2")

    async def main() -> None:
        manager = SessionManager()
        session = Session()
        session.allow(AuthProvider(bad))
        manager.attach(session)
        with pytest.raises(SessionError, match=r"registry credentials for r:1: .*not valid JSON"):
            await session_credentials(manager, [session.id])("r:1")
        await manager.close()

    asyncio.run(main())


@dataclass(eq=True)
class FakeEngine:
    sessions: SessionManager


def test_one_registry_client_per_engine_and_state_per_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BKCORE_REGISTRY_CONFIG", str(tmp_path / "none.toml"))

    async def main() -> None:
        manager = SessionManager()
        a, b = Session(), Session()
        manager.attach(a)
        manager.attach(b)
        engine, other_engine = FakeEngine(manager), FakeEngine(manager)
        c1 = registry_client(engine, [a.id])  # type: ignore[arg-type]
        c2 = registry_client(engine, [a.id])  # type: ignore[arg-type]
        c3 = registry_client(engine, [b.id])  # type: ignore[arg-type]
        c4 = registry_client(other_engine, [a.id])  # type: ignore[arg-type]
        assert c1.connections is c2.connections is c3.connections
        assert c4.connections is not c1.connections
        assert c1._t.auth is c2._t.auth  # tokens of session a are reused by its ops
        assert c3._t.auth is not c1._t.auth  # never shared with session b
        manager.unregister(a.id)
        c5 = registry_client(engine, [a.id])  # type: ignore[arg-type]
        assert c5._t.auth is not c1._t.auth  # session a ended: its tokens were dropped
        assert registry_client(engine, [b.id])._t.auth is c3._t.auth  # type: ignore[arg-type]
        await manager.close()

    asyncio.run(main())


def test_failing_helper_is_an_error_not_anonymous(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    helper = bin_dir / "docker-credential-locked"
    helper.write_text(
        f"#!{sys.executable}\nprint('the password store is locked')\nraise SystemExit(1)\n"
    )
    helper.chmod(helper.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", str(bin_dir))
    cfg = write_config(tmp_path / "d", {"credsStore": "locked"})
    with pytest.raises(
        CallError,
        match=r"docker-credential-locked get for reg\.l failed: the password store is locked",
    ):
        ask(AuthProvider(cfg), "reg.l")
