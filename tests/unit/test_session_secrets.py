"""Secrets attachable: providers, spec parsing, daemon-side lookup."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bkcore.errors import SessionError
from bkcore.session import Session
from bkcore.session.secrets import (
    GETSECRET,
    GetSecretRequest,
    GetSecretResponse,
    SecretNotFoundError,
    get_secret,
)
from bkcore.sessions.secrets import SecretSource, SecretsProvider, parse_secret_spec


def session_with(secrets: dict[str, bytes | SecretSource]) -> Session:
    s = Session()
    s.allow(SecretsProvider(secrets))
    return s


def test_secret_values_from_bytes_file_and_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "tok").write_bytes(b"from-file\n")
    monkeypatch.setenv("BK_TEST_SECRET", "from-env")
    s = session_with(
        {
            "raw": b"s3cr3t\n",
            "file": parse_secret_spec(f"id=file,src={tmp_path / 'tok'}"),
            "env": parse_secret_spec("id=env,env=BK_TEST_SECRET"),
        }
    )
    caller = s.caller()

    async def main() -> list[bytes]:
        return [await get_secret(caller, k) for k in ("raw", "file", "env")]

    assert asyncio.run(main()) == [b"s3cr3t\n", b"from-file\n", b"from-env"]
    assert GETSECRET in s.methods()


def test_missing_secret_is_a_session_error_without_values(tmp_path: Path) -> None:
    s = session_with(
        {"present": b"TOPSECRETVALUE", "gone": SecretSource("gone", file=str(tmp_path / "x"))}
    )

    async def lookup(name: str, session: Session) -> bytes:
        return await get_secret(session.caller(), name)

    with pytest.raises(SecretNotFoundError, match="secret absent not found") as info:
        asyncio.run(lookup("absent", s))
    assert isinstance(info.value, SessionError)
    assert "TOPSECRETVALUE" not in repr(info.value) and "TOPSECRETVALUE" not in repr(s.handlers())
    with pytest.raises(SecretNotFoundError):
        asyncio.run(lookup("gone", s))
    # a session without the Secrets attachable: Unimplemented counts as "not provided"
    with pytest.raises(SecretNotFoundError):
        asyncio.run(lookup("present", Session()))
    assert "TOPSECRETVALUE" not in repr(GetSecretResponse(data=b"TOPSECRETVALUE"))


def test_oversized_secret_is_refused(tmp_path: Path) -> None:
    (tmp_path / "big").write_bytes(b"x" * (500 * 1024 + 1))
    s = session_with({"big": parse_secret_spec(f"id=big,src={tmp_path / 'big'}")})
    with pytest.raises(SessionError, match="over 500 KiB"):
        asyncio.run(get_secret(s.caller(), "big"))


def test_parse_secret_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_secret_spec("id=a,src=/x/y") == SecretSource("a", file="/x/y")
    assert parse_secret_spec("id=a,source=/x/y") == SecretSource("a", file="/x/y")
    assert parse_secret_spec("id=a,env=VAR") == SecretSource("a", env="VAR")
    assert parse_secret_spec("type=env,id=a,src=VAR") == SecretSource("a", env="VAR")
    monkeypatch.setenv("ONLYID", "v")
    assert parse_secret_spec("id=ONLYID") == SecretSource("ONLYID", env="ONLYID")
    monkeypatch.delenv("ONLYID")
    assert parse_secret_spec("id=ONLYID").file is not None
    for bad in ("src=/x", "id=a,src=/x,env=V", "id=a,bogus=1", "id", "id=a,type=tcp"):
        with pytest.raises(SessionError):
            parse_secret_spec(bad)


def test_wire_form_matches_capture() -> None:
    assert bytes(GetSecretRequest(id="mysecret")).hex() == "0a086d79736563726574"
    assert bytes(GetSecretResponse(data=b"s3cr3t\n")).hex() == "0a077333637233740a"
