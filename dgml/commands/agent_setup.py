"""Which config, which hub and which agent token the ``dgml agent`` commands use.

Which config: ``--config``, else ``DGML_AGENT_CONFIG``, else ``./agent.toml``. Which hub:
``--server``, else the hub the agent enrolled with (recorded beside its token), else the
config's ``server``; a token is only ever sent to the hub that issued it. ``--server`` and
``--state-dir`` are checked by the same rules as the config's keys.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from dgml.commands.common import err
from dgml.errors import Invalid


@dataclass
class Setup:
    """The config as the options amend it, and the agent token if there is one."""

    config: Any  # workers.config.AgentConfig
    server: str
    credentials: Any  # workers.enrolment.Credentials | None
    server_given: bool

    @property
    def state_dir(self) -> Path:
        return self.config.agent.state_dir

    def token(self) -> Any:
        """The credentials, or the error that says how to enrol."""
        from workers.enrolment import NotEnrolled, not_enrolled_message

        if self.credentials is None:
            raise NotEnrolled(not_enrolled_message(self.state_dir, self.server))
        if self.credentials.server != self.server:
            raise NotEnrolled(
                f"this agent's token was issued by the hub at {self.credentials.server}, not "
                f"{self.server}: enrol it with that hub (--enrol TOKEN) or leave out --server"
            )
        return self.credentials


def _option(ctx: typer.Context, name: str, value: Any) -> Any:
    """A verb's option, else the same option given before the verb."""
    if value is not None:
        return value
    parent = (ctx.parent.obj if ctx.parent is not None else None) or {}
    return parent.get(name)


def load_setup(
    ctx: typer.Context | None,
    config_path: Path | None,
    server: str | None,
    state_dir: Path | None,
    *,
    warn: bool = True,
) -> Setup:
    from pydantic import ValidationError

    from workers.config import AgentSettings, load_config
    from workers.enrolment import load_credentials

    if ctx is not None:
        config_path = _option(ctx, "config", config_path)
        server = _option(ctx, "server", server)
        state_dir = _option(ctx, "state_dir", state_dir)
    path = config_path or Path(os.environ.get("DGML_AGENT_CONFIG") or "agent.toml")
    config = load_config(path)
    updates: dict[str, Any] = {}
    if server:
        updates["server"] = server
    if state_dir:
        updates["state_dir"] = state_dir.expanduser().resolve()
    if updates:
        try:
            agent = AgentSettings.model_validate({**config.agent.model_dump(), **updates})
        except ValidationError as exc:
            first = exc.errors()[0]
            name = str(first["loc"][0]).replace("_", "-")
            raise Invalid(f"--{name}: {first['msg']}", field=name) from None
        config = config.model_copy(update={"agent": agent})
    credentials = (
        load_credentials(config.agent.state_dir) if config.agent.state_dir.is_dir() else None
    )
    chosen = (
        config.agent.server
        if server
        else (credentials.server if credentials else config.agent.server)
    )
    if warn and credentials and not server and credentials.server != config.agent.server:
        err.print(
            f"note: the config names {escape(config.agent.server)}, but this agent is enrolled "
            f"with {escape(credentials.server)}: using that (enrol again to change hubs)"
        )
    return Setup(config, chosen, credentials, bool(server))


def hub_for(setup: Setup, **kwargs: Any):
    from workers.hub import HubClient

    credentials = setup.token()
    return HubClient(credentials.server, credentials.agent_token, **kwargs)
