"""``dgml login``, ``logout`` and ``whoami`` against a live hub."""

from __future__ import annotations

import stat
import tomllib

import httpx
import pytest

from tests.conftest import free_port


def test_login_checks_the_token_and_stores_it_private(dgml, live_server, alice, config_dir):
    result = dgml("login", "--server", live_server + "/", "--token", alice.token)
    assert result.code == 0, result.stderr
    assert "alice" in result.stdout
    assert alice.token not in result.stdout + result.stderr
    path = config_dir / "logins.toml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    stored = tomllib.loads(path.read_text())
    assert stored["default"] == live_server
    assert stored["logins"][live_server] == {"user": "alice", "token": alice.token}
    assert [p.name for p in config_dir.iterdir()] == ["logins.toml"]  # no temporary left

    me = dgml("whoami", "--json")
    assert me.code == 0, me.stderr
    assert me.json() == {"server": live_server, "user": "alice", "is_admin": False}


@pytest.mark.filterwarnings("ignore::getpass.GetPassWarning")
def test_login_reads_the_token_from_a_prompt(dgml, live_server, bob):
    result = dgml("login", "--server", live_server, input=bob.token + "\n")
    assert result.code == 0, result.stderr
    assert bob.token not in result.stdout + result.stderr
    assert dgml("whoami", "--json").json()["user"] == "bob"


def test_login_with_a_wrong_token_stores_nothing(dgml, live_server, alice, config_dir):
    result = dgml("login", "--server", live_server, "--token", "dgml_not_a_real_token")
    assert result.code == 1
    assert result.one_line_error, result.stderr
    assert "refused this token" in result.stderr
    assert "dgml_not_a_real_token" not in result.stderr
    assert not (config_dir / "logins.toml").exists()

    dgml("login", "--server", live_server, "--token", alice.token)
    before = (config_dir / "logins.toml").read_bytes()
    again = dgml("login", "--server", live_server, "--token", "dgml_wrong", "--json")
    assert again.code == 1
    assert again.stdout == ""
    assert (config_dir / "logins.toml").read_bytes() == before


def test_environment_overrides_the_stored_login(dgml, live_server, alice, bob):
    dgml("login", "--server", live_server, "--token", alice.token)
    as_bob = dgml("whoami", "--json", env={"DGML_TOKEN": bob.token})
    assert as_bob.json()["user"] == "bob"
    wrong = dgml("whoami", env={"DGML_TOKEN": "dgml_wrong"})
    assert wrong.code == 1
    assert wrong.one_line_error, wrong.stderr
    assert "dgml login --server" in wrong.stderr


def test_server_from_the_environment(dgml, live_server, alice):
    result = dgml("whoami", "--json", env={"DGML_SERVER": live_server, "DGML_TOKEN": alice.token})
    assert result.code == 0, result.stderr
    assert result.json()["server"] == live_server


def test_whoami_and_logout_without_a_login(dgml, live_server):
    nobody = dgml("whoami")
    assert nobody.code == 1
    assert nobody.one_line_error
    assert "dgml login --server URL" in nobody.stderr
    not_here = dgml("whoami", "--server", live_server)
    assert not_here.code == 1
    assert f"not logged in to {live_server}" in not_here.stderr
    assert dgml("logout", "--server", live_server).code == 1


def test_logout_forgets_only_that_hub(dgml, live_server, alice, config_dir):
    other = f"http://127.0.0.1:{free_port()}"
    dgml("login", "--server", live_server, "--token", alice.token)
    # A second hub's login is stored by hand: that hub is not running.
    text = (config_dir / "logins.toml").read_text()
    (config_dir / "logins.toml").write_text(
        text + f'\n[logins."{other}"]\nuser = "x"\ntoken = "dgml_other"\n'
    )
    result = dgml("logout", "--json")
    assert result.code == 0, result.stderr
    assert result.json() == {
        "server": live_server,
        "logged_out": True,
        "revoked": True,
        "note": None,
    }
    stored = tomllib.loads((config_dir / "logins.toml").read_text())
    assert list(stored["logins"]) == [other]
    assert stored["default"] == other
    assert stat.S_IMODE((config_dir / "logins.toml").stat().st_mode) == 0o600
    assert dgml("whoami", "--server", live_server).code == 1
    # The token was revoked on the hub, not only forgotten here.
    assert httpx.get(f"{live_server}/api/v1/user", headers=alice.headers).status_code == 401

    # The other hub is down: its token is forgotten all the same, and the command says so.
    down = dgml("logout")
    assert down.code == 0, down.stderr
    assert f"Logged out of {other}: the token is forgotten here." in down.stdout
    assert f"cannot reach the hub at {other}" in down.stderr
    assert "stays valid on the hub until it is revoked there" in down.stderr
    assert "logins" not in tomllib.loads((config_dir / "logins.toml").read_text())


def test_logout_revokes_the_token_and_tells_a_token_the_hub_no_longer_takes(
    dgml, live_server, alice, bob
):
    dgml("login", "--server", live_server, "--token", alice.token)
    result = dgml("logout")
    assert result.code == 0, result.stderr
    assert "the token is revoked there and forgotten here" in result.stdout
    assert result.stderr == ""
    assert dgml("whoami", "--server", live_server, env={"DGML_TOKEN": alice.token}).code == 1
    # bob's token is revoked elsewhere (another computer logged out) before he logs out here.
    dgml("login", "--server", live_server, "--token", bob.token)
    httpx.delete(f"{live_server}/api/v1/user/tokens/current", headers=bob.headers)
    stale = dgml("logout", "--json")
    assert stale.code == 0, stale.stderr
    assert stale.json()["revoked"] is False
    assert "no longer takes this token" in stale.json()["note"]
    assert dgml("logout").code == 1  # nothing left to log out of


def test_a_hub_that_is_down_is_one_clear_line(dgml):
    down = f"http://127.0.0.1:{free_port()}"
    for args in (
        ("login", "--server", down, "--token", "dgml_x"),
        ("search", "bracket", "--server", down),
        ("fetch", "alice/cube", "--server", down),
    ):
        result = dgml(*args)
        assert result.code == 1, (args, result.stderr)
        assert result.one_line_error, result.stderr
        assert f"cannot reach the hub at {down}" in result.stderr


def test_a_name_that_does_not_resolve(dgml):
    result = dgml("search", "--server", "http://hub.invalid")
    assert result.code == 1
    assert result.one_line_error, result.stderr
    assert "cannot reach the hub at http://hub.invalid" in result.stderr


def test_bad_hub_addresses_are_bad_usage(dgml):
    for address in ("ftp://example.org", "http://", "http://host:port"):
        result = dgml("search", "--server", address)
        assert result.code == 2, (address, result.stderr)
        assert result.one_line_error, result.stderr
        assert "not a hub address" in result.stderr


def test_a_server_that_is_not_a_hub(dgml, live_server):
    result = dgml("search", "--server", live_server + "/nothing-here")
    assert result.code == 1
    assert result.one_line_error, result.stderr
    assert "has no /nothing-here/api/v1/designs" in result.stderr


def test_an_unreadable_login_file(dgml, live_server, alice, config_dir):
    config_dir.mkdir()
    (config_dir / "logins.toml").write_text("default = [this is not toml")
    result = dgml("whoami")
    assert result.code == 1
    assert result.one_line_error, result.stderr
    assert "logins.toml is not readable" in result.stderr
    login = dgml("login", "--server", live_server, "--token", alice.token)
    assert login.code == 1
    assert "not readable" in login.stderr
