"""``dgml login``, ``dgml logout`` and ``dgml whoami``: who the maker is on which hub.

A login is kept only after the hub has accepted its token, so a mistyped token leaves nothing
behind. Logging out revokes the token on the hub (``DELETE /user/tokens/current``), then
forgets it on this computer; when the hub cannot be reached the token is forgotten all the same,
and the command says that it stays valid on the hub.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from dgml.client import Hub, HubFailure, HubUnreachable
from dgml.commands.common import (
    JsonOpt,
    ServerOpt,
    choose_server,
    env,
    err,
    out,
    print_json,
    token_for,
)
from dgml.config_store import Login, LoginStore, normalise_server
from dgml.errors import DgmlError, Unauthorized


def login(
    server: ServerOpt = None,
    token: Annotated[
        str | None,
        typer.Option(
            "--token", help="The API token (asked for when not given; DGML_TOKEN also works)."
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Log in to a hub: check the token there and keep it (mode 0600) for later commands."""
    address = server or env("DGML_SERVER")
    if not address:
        raise typer.BadParameter("give the hub's address: --server URL", param_hint="--server")
    address = normalise_server(address)
    secret = (token or env("DGML_TOKEN") or "").strip()
    if not secret:
        secret = typer.prompt(f"Token for {address}", hide_input=True, err=True).strip()
    if not secret:
        raise typer.BadParameter("the token is empty", param_hint="--token")
    with Hub(address, secret) as hub:
        try:
            me = hub.whoami()
        except Unauthorized as exc:
            why = getattr(exc, "hub_detail", exc.detail)
            raise Unauthorized(
                f"the hub at {address} refused this token ({why}): nothing was stored"
            ) from None
    store = LoginStore()
    store.save(Login(address, me["name"], secret))
    if as_json:
        print_json({"server": address, "user": me["name"], "config": str(store.path)})
        return
    out.print(
        f"Logged in to {escape(address)} as [bold]{escape(me['name'])}[/] "
        f"(saved in {escape(str(store.path))}).",
        highlight=False,
    )


def _revoke(address: str, token: str) -> tuple[bool, str | None]:
    """Revoke ``token`` at the hub: (revoked, why not)."""
    try:
        with Hub(address, token, timeout=15.0) as hub:
            hub.revoke_token()
    except Unauthorized:
        return False, "the hub no longer takes this token (already revoked or unknown)"
    except (HubUnreachable, HubFailure) as exc:
        return False, f"{exc.detail}: the token stays valid on the hub until it is revoked there"
    return True, None


def logout(server: ServerOpt = None, as_json: JsonOpt = False) -> None:
    """Revoke the stored token at its hub and forget it (the last login's hub unless --server
    names one); forgotten here even when the hub cannot be reached."""
    address = choose_server(server)
    store = LoginStore()
    stored = store.get(address)
    if stored is None:
        raise DgmlError(f"not logged in to {address}")
    revoked, why_not = _revoke(address, stored.token)
    store.remove(address)
    if as_json:
        print_json({"server": address, "logged_out": True, "revoked": revoked, "note": why_not})
        return
    if revoked:
        out.print(
            f"Logged out of {escape(address)}: the token is revoked there and forgotten here.",
            highlight=False,
        )
        return
    out.print(f"Logged out of {escape(address)}: the token is forgotten here.", highlight=False)
    err.print(f"[yellow]note:[/] {escape(why_not or '')}", highlight=False)


def whoami(server: ServerOpt = None, as_json: JsonOpt = False) -> None:
    """Show the account the token belongs to, on the chosen hub."""
    address = choose_server(server)
    token = token_for(address)
    if not token:
        raise DgmlError(f"not logged in to {address}: run dgml login --server {address}")
    with Hub(address, token) as hub:
        me = hub.whoami()
    source = "DGML_TOKEN" if env("DGML_TOKEN") else "stored login"
    if as_json:
        print_json({"server": address, "user": me["name"], "is_admin": me["is_admin"]})
        return
    role = " (admin)" if me["is_admin"] else ""
    out.print(
        f"[bold]{escape(me['name'])}[/]{role} on {escape(address)} (token from the {source})",
        highlight=False,
    )
