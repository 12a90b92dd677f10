"""``dgml order``, ``orders``, ``order-status`` and ``order-cancel`` against a live hub: its
worker places orders, and a fablab's ``dgml agent`` makes them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from tests.cli.conftest import API, LYON, REPO, register_lab, wait_until

NEAR_LYON = f"{LYON[0]},{LYON[1]}"
LASER = {"process": "laser", "materials": ["plywood-3mm"], "build_volume_mm": [600, 400, 10]}


def ordered(dgml, *args: str, env: dict[str, str | None] | None = None):
    return dgml("order", "alice/cube", "--process", "fdm", "--material", "pla", *args, env=env)


def my_orders(server: str, account) -> list[dict]:
    response = httpx.get(f"{server}{API}/orders", headers=account.headers)
    assert response.status_code == 200, response.text
    return response.json()["items"]


@pytest.mark.slow
def test_an_order_goes_to_the_nearest_lab_that_can_make_it_and_is_made_there(
    dgml, live_server, alice, operator, cube_design, hub_worker, lab_agent, logged_in
):
    # Nearer than the agent's lab, but it has no agent online (and only a laser cutter).
    register_lab(live_server, operator, "Laser Croix-Rousse", (45.7745, 4.8320), [LASER])
    logged_in(alice)
    placed = ordered(dgml, "--qty", "2", "--near", NEAR_LYON)
    assert placed.code == 0, placed.stderr + hub_worker.read_text()
    text = placed.stdout
    assert "Order 1: alice/cube@1, 2 x fdm in pla, near 45.76, 4.84" in text
    assert f"2 parts at Atelier de Villeurbanne ({lab_agent.id}), 4.1 km away" in text
    assert "chosen: Atelier de Villeurbanne" in text
    assert "the best score of the 1 fablab that can make it among 2 considered" in text
    assert "km avoided against making it at the central factory" in text
    assert "1 not chosen: offline: no agent connected" in text
    assert "dgml order-status 1 --watch" in placed.stderr

    watched = dgml("order-status", "1", "--watch", "--timeout", "180")
    assert watched.code == 0, watched.stderr
    log = watched.stdout
    for sentence in (
        "order taken: 2 parts of alice/cube@1, fdm in pla",
        "line 1 offered to Atelier de Villeurbanne",
        f"Atelier de Villeurbanne ({lab_agent.id}) accepted line 1",
        f"Atelier de Villeurbanne ({lab_agent.id}) completed line 1",
        "Order 1 is completed.",
    ):
        assert sentence in log, log
    assert log.count("completed line 1") == 1  # each event once

    as_json = ordered(dgml, "--near", NEAR_LYON, "--json")
    assert as_json.code == 0, as_json.stderr
    doc = as_json.json()
    assert doc["id"] == 2 and doc["mine"] is True
    assert doc["state"] in ("offered", "in_progress", "completed")
    assert doc["decision"]["winner"]["fablab_id"] == lab_agent.id
    assert doc["idempotency_key"]
    assert len(my_orders(live_server, alice)) == 2

    wait_until(lambda: dgml("order-status", "2", "--json").json()["state"] == "completed", "2")
    table = dgml("orders")
    assert table.code == 0, table.stderr
    rows = [line.split() for line in table.stdout.splitlines()[1:]]
    assert [row[:3] for row in rows] == [
        ["2", "alice/cube@1", "completed"],
        ["1", "alice/cube@1", "completed"],
    ]
    assert table.stdout.count("Atelier de Villeurbanne") == 2
    listed = dgml("orders", "--state", "completed", "--json").json()
    assert [o["id"] for o in listed] == [2, 1]
    assert listed[0]["fablabs"] == [{"id": lab_agent.id, "name": "Atelier de Villeurbanne"}]
    assert dgml("orders", "--state", "routing", "--json").json() == []
    assert "No orders routing." in dgml("orders", "--state", "routing").stdout


@pytest.mark.slow
def test_an_order_no_lab_can_make_says_why_and_fails(
    dgml, live_server, alice, operator, cube_design, hub_worker, logged_in
):
    # The only fablab near has no agent online, and only a laser cutter.
    register_lab(live_server, operator, "Laser Croix-Rousse", (45.7745, 4.8320), [LASER])
    logged_in(alice)
    refused = ordered(dgml, "--near", NEAR_LYON)
    assert refused.code == 1, refused.stdout + refused.stderr
    assert refused.one_line_error, refused.stderr
    assert "error: order 1 is unplaceable: none of the 1 fablabs considered" in refused.stderr
    assert "Why not:" in refused.stdout
    assert "none of the 1 fablabs considered (" in refused.stdout
    assert "1 not chosen: offline: no agent connected" in refused.stdout

    as_json = ordered(dgml, "--near", NEAR_LYON, "--json")
    assert as_json.code == 1
    assert as_json.json()["state"] == "unplaceable"
    assert as_json.json()["reason"].startswith("none of the 1 fablabs considered")
    watched = dgml("order-status", "2", "--watch")
    assert watched.code == 1
    assert watched.one_line_error and "order 2 is unplaceable" in watched.stderr
    assert "line 1 unplaceable: none of the 1 fablabs" in watched.stdout


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--near", "45.7"), "give LAT,LON"),
        (("--near", "north,east"), "give LAT,LON"),
        (("--near", "nan,1"), "give LAT,LON"),
        (("--near", "91,2"), "latitude 91.0 is not between -90 and 90"),
        (("--near", "-45,-180.5"), "longitude -180.5 is not between -180 and 180"),
        (("--near", NEAR_LYON, "--qty", "0"), "greater than or equal to 1"),
        (("--near", NEAR_LYON, "--qty", "two"), "should be a valid integer"),
        (("--near", NEAR_LYON, "--param", "width"), "give NAME=VALUE"),
        (("--near", NEAR_LYON, "--param", "=3"), "give NAME=VALUE"),
        (("--near", NEAR_LYON, "--param", "a=1", "--param", "a=2"), "a is given twice"),
        (("--process", "fdm"), "Missing option"),
    ],
)
def test_bad_usage_exits_2_and_orders_nothing(
    dgml, live_server, alice, cube_design, logged_in, args, says
):
    logged_in(alice)
    result = ordered(dgml, *args)
    assert result.code == 2, result.stdout + result.stderr
    assert says in " ".join(result.stderr.split()), result.stderr
    assert "Traceback" not in result.stderr
    assert my_orders(live_server, alice) == []


def test_what_the_hub_refuses_is_one_line(dgml, live_server, alice, cube_design, logged_in):
    logged_in(alice)

    def order(design: str, *args: str, env: dict[str, str] | None = None):
        return dgml("order", design, "--near", NEAR_LYON, *args, env=env)

    cases = [
        # Input the hub finds invalid is bad usage (2), like a malformed option.
        (order("alice/cube", "--process", "weaving", "--material", "pla"), 2, "unknown process"),
        (order("alice/cube", "--process", "fdm", "--material", "cheese"), 2, "unknown material"),
        (
            order("alice/cube", "--process", "fdm", "--material", "pla", "--param", "width=30"),
            2,
            "params",
        ),
        # What does not exist, or who may not, is a refusal (1).
        (order("alice/nope", "--process", "fdm", "--material", "pla"), 1, "alice/nope"),
        (order("alice/cube@7", "--process", "fdm", "--material", "pla"), 1, "no version 7"),
        (
            order(
                "alice/cube",
                *("--process", "fdm", "--material", "pla", "--server", "http://127.0.0.1:9"),
                env={"DGML_TOKEN": alice.token},
            ),
            1,
            "cannot reach the hub at http://127.0.0.1:9",
        ),
    ]
    for result, code, says in cases:
        assert result.code == code, (says, result.stderr)
        assert result.one_line_error, result.stderr
        assert says in result.stderr
    logged_out = dgml(
        "order", "alice/cube", "--process", "fdm", "--material", "pla", "--near", NEAR_LYON,
        env={"DGML_CONFIG_DIR": str(REPO / "no-such-config"), "DGML_SERVER": live_server},
    )  # fmt: skip
    assert logged_out.code == 1 and "not logged in" in logged_out.stderr
    assert my_orders(live_server, alice) == []


# --- a lost answer ----------------------------------------------------------------------------


@dataclass
class LossyProxy:
    """Forwards everything to the hub; drops the answer of the first order it forwards, and
    answers 503 to reads of an order while ``views_fail``."""

    upstream: str
    base: str = ""
    order_keys: list[str] = field(default_factory=list)
    views_fail: bool = False


@pytest.fixture
def lossy_proxy(live_server) -> Iterator[LossyProxy]:
    state = LossyProxy(live_server)
    client = httpx.Client(base_url=live_server, timeout=60)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _forward(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            if state.views_fail and self.command == "GET" and "/orders/" in self.path:
                self.send_response(503)
                self.send_header("content-length", "0")
                self.end_headers()
                return
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host",)}
            answer = client.request(self.command, self.path, content=body, headers=headers)
            if self.command == "POST" and self.path.endswith("/orders"):
                state.order_keys.append(self.headers["idempotency-key"])
                if len(state.order_keys) == 1:
                    self.close_connection = True  # the hub took it; the maker never hears
                    return
            self.send_response(answer.status_code)
            for name in ("content-type",):
                if name in answer.headers:
                    self.send_header(name, answer.headers[name])
            self.send_header("content-length", str(len(answer.content)))
            self.end_headers()
            self.wfile.write(answer.content)

        do_GET = do_POST = _forward

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()
    client.close()


def test_an_order_whose_answer_was_lost_is_sent_again_and_made_once(
    dgml, live_server, alice, cube_design, lossy_proxy
):
    result = ordered(
        dgml,
        "--near",
        NEAR_LYON,
        "--wait",
        "0",
        "--json",
        env={"DGML_SERVER": lossy_proxy.base, "DGML_TOKEN": alice.token},
    )
    assert result.code == 0, result.stderr
    first, again = lossy_proxy.order_keys
    assert first == again  # the same key: the hub answered the order it had made
    [made] = my_orders(live_server, alice)
    assert result.json()["id"] == made["id"]
    assert result.json()["idempotency_key"] == first
    # A new invocation is a new order, with a key of its own.
    assert ordered(dgml, "--near", NEAR_LYON, "--wait", "0", env={
        "DGML_SERVER": lossy_proxy.base, "DGML_TOKEN": alice.token
    }).code == 0  # fmt: skip
    assert len(set(lossy_proxy.order_keys)) == 2
    assert len(my_orders(live_server, alice)) == 2
    # The order is taken but the hub stops answering while it is placed: the maker learns
    # the order's number, to follow it later.
    lossy_proxy.views_fail = True
    lost = ordered(dgml, "--near", NEAR_LYON, env={
        "DGML_SERVER": lossy_proxy.base, "DGML_TOKEN": alice.token
    })  # fmt: skip
    assert lost.code == 1 and lost.one_line_error, lost.stderr
    assert "order 3 is taken, but asking where it went failed" in lost.stderr
    assert "dgml order-status 3 --watch" in lost.stderr


# --- following and cancelling ------------------------------------------------------------------


def test_status_cancel_and_watch_of_an_order_not_placed_yet(
    dgml, live_server, alice, bob, cube_design, logged_in
):
    logged_in(alice)
    placed = ordered(dgml, "--near", NEAR_LYON, "--wait", "0.5")
    assert placed.code == 0, placed.stderr
    assert "Still looking for a fablab after 0.5 s" in placed.stderr
    status = dgml("order-status", "1")
    assert status.code == 0, status.stderr
    assert "Order 1: alice/cube@1" in status.stdout and "routing" in status.stdout
    assert "order taken: 1 part of alice/cube@1, fdm in pla" in status.stdout

    by_bob = dgml("order-cancel", "1", env={"DGML_TOKEN": bob.token})
    assert by_bob.code == 1 and by_bob.one_line_error
    assert "only the maker who placed an order may cancel it" in by_bob.stderr
    cancelled = dgml("order-cancel", "1")
    assert cancelled.code == 0, cancelled.stderr
    assert "cancelled" in cancelled.stdout
    assert dgml("order-cancel", "1", "--json").json()["state"] == "cancelled"

    watched = dgml("order-status", "1", "--watch")
    assert watched.code == 1
    assert watched.one_line_error
    assert "order 1 is cancelled: cancelled by the maker" in watched.stderr
    assert "line 1 cancelled" in watched.stdout
    public = dgml(
        "order-status",
        "1",
        "--json",
        env={"DGML_CONFIG_DIR": "elsewhere", "DGML_SERVER": live_server},
    )
    assert public.code == 0, public.stderr
    assert public.json()["mine"] is False and public.json()["idempotency_key"] is None

    missing = dgml("order-status", "999")
    assert missing.code == 1 and missing.one_line_error and "no order 999" in missing.stderr
    assert dgml("order-status", "first").code == 2
    assert dgml("order-status", "0").code == 2
    unknown_state = dgml("orders", "--state", "lost")
    assert unknown_state.code == 2 and "unknown state 'lost'" in unknown_state.stderr


def test_watch_stops_cleanly_on_ctrl_c(live_server, alice, cube_design, tmp_path):
    env = {
        **os.environ,
        "DGML_CONFIG_DIR": str(tmp_path / "config"),
        "DGML_SERVER": live_server,
        "DGML_TOKEN": alice.token,
    }
    order = ["alice/cube", "--process", "fdm", "--material", "pla", "--near", NEAR_LYON]
    command = [sys.executable, "-m", "dgml"]
    placed = subprocess.run(
        [*command, "order", *order, "--wait", "0"], env=env, capture_output=True, timeout=60
    )
    assert placed.returncode == 0, placed.stderr
    watcher = subprocess.Popen(
        [*command, "order-status", "1", "--watch"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert watcher.stdout is not None
        lines = []
        while "order taken" not in "".join(lines):
            line = watcher.stdout.readline()
            assert line, watcher.stderr.read() if watcher.stderr else ""
            lines.append(line)
        watcher.send_signal(signal.SIGINT)
        _, stderr = watcher.communicate(timeout=30)
    finally:
        if watcher.poll() is None:
            watcher.kill()
    assert watcher.returncode == 130, stderr
    assert stderr.strip() == "Stopped watching order 1: it goes on."
    assert "Traceback" not in stderr
