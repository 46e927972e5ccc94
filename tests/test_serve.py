"""`nerdistil serve`: the real server in a subprocess on a free port, driven over HTTP.

Concurrent requests must get exactly what serial ``Tagger.tag`` gives; every error is a JSON body with
its status; readiness waits for the warm-up; SIGTERM lets requests in flight finish and exits 0.
"""

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

TWEETS = [
    "Obama visits London today",
    "",
    "@john loves #Apple & Google so much",
    "Read this http://t.co/AbC123 from New York !!",
    "Zu\u0308rich and Mu\u0308nchen in the snow",
    " ".join(f"Obama met @user{i} in London and #Paris about Google" for i in range(12)),  # needs windows
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``nerdistil serve`` in a child process; ``url`` once it is ready."""

    def __init__(self, export: Path, log: Path, *args: str) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "nerdistil", "serve", str(export), "--port",
                                      str(self.port), "--threads", "1", *args], stdout=open(log, "w"),
                                     stderr=subprocess.STDOUT, env=env)  # fmt: skip
        deadline = time.time() + 120
        while time.time() < deadline:
            assert self.proc.poll() is None, log.read_text()
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError("the server never became ready:\n" + log.read_text())

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)


@pytest.fixture(scope="module")
def server(exported, tmp_path_factory):
    s = Server(exported, tmp_path_factory.mktemp("serve") / "log.txt", "--max-texts", "16", "--max-chars", "2000",
               "--max-body-bytes", "20000", "--max-wait-ms", "20", "--max-batch-size", "8",
               "--lanes", "2")  # fmt: skip
    yield s
    s.stop()


def _requests() -> list[dict]:
    """40 requests of 1 to 5 texts (or word lists), mixed sizes."""
    out = []
    for i in range(40):
        texts = [TWEETS[(i + k) % len(TWEETS)] for k in range(1 + i % 5)]
        out.append({"words": [t.split() for t in texts]} if i % 4 == 3 else {"texts": texts})
    return out


def test_concurrent_requests_get_exactly_what_serial_tagging_gives(server, exported):
    from nerdistil import Tagger

    tagger = Tagger.load(exported)
    bodies = _requests()

    async def main():
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            return await asyncio.gather(*(client.post("/v1/tag", json=b) for b in bodies))

    responses = asyncio.run(main())
    sha = __import__("hashlib").sha256((exported / "model.onnx").read_bytes()).hexdigest()
    for body, r in zip(bodies, responses):
        assert r.status_code == 200, r.text
        got = r.json()
        assert got["model_sha256"] == sha
        if "texts" in body:
            want = [tagger.tag([t])[0] for t in body["texts"]]
        else:
            want = [tagger.tag_words([w])[0] for w in body["words"]]
        assert got["results"] == json.loads(json.dumps(want))  # the same words, tags, scores and offsets
    metrics = httpx.get(server.url + "/metrics").text
    from prometheus_client.parser import text_string_to_metric_families

    families = {f.name: f for f in text_string_to_metric_families(metrics)}
    batches = {s.name: s.value for s in families["nerdistil_batch_size"].samples}
    assert batches["nerdistil_batch_size_count"] < sum(len(next(iter(b.values()))) for b in bodies)  # batched
    tagged = next(s.value for s in families["nerdistil_texts_tagged"].samples if s.name.endswith("_total"))
    assert tagged >= sum(len(next(iter(b.values()))) for b in bodies)
    ok = [s for s in families["nerdistil_requests"].samples
          if s.name.endswith("_total") and s.labels == {"path": "/v1/tag", "status": "200"}]  # fmt: skip
    assert ok and ok[0].value >= len(bodies)
    assert "nerdistil_queue_depth" in families and "nerdistil_request_seconds" in families
    runs = {s.labels["session"]: s.value for s in families["nerdistil_batch_runs"].samples
            if s.name.endswith("_total")}  # fmt: skip
    assert runs.get("lane", 0) >= 1  # full batches ran side by side on the lanes, with the same results


def test_lanes_on_a_second_one_thread_session_give_serial_results(exported, tmp_path):
    """Two threads and two lanes: lone batches run on the two-thread session, queued ones side by side on the
    one-thread session; every text still gets what serial ``Tagger.tag`` gives."""
    from nerdistil import Tagger

    s = Server(exported, tmp_path / "log.txt", "--threads", "2", "--lanes", "2", "--max-batch-size", "2")
    try:
        bodies = _requests()

        async def main():
            async with httpx.AsyncClient(base_url=s.url, timeout=60) as client:
                return await asyncio.gather(*(client.post("/v1/tag", json=b) for b in bodies))

        responses = asyncio.run(main())
        tagger = Tagger.load(exported)
        for body, r in zip(bodies, responses):
            assert r.status_code == 200, r.text
            want = ([tagger.tag([t])[0] for t in body["texts"]] if "texts" in body
                    else [tagger.tag_words([w])[0] for w in body["words"]])  # fmt: skip
            assert r.json()["results"] == json.loads(json.dumps(want))
        from prometheus_client.parser import text_string_to_metric_families

        families = {f.name: f for f in text_string_to_metric_families(httpx.get(s.url + "/metrics").text)}
        runs = {x.labels["session"]: x.value for x in families["nerdistil_batch_runs"].samples
                if x.name.endswith("_total")}  # fmt: skip
        assert runs.get("lane", 0) >= 1 and runs.get("all", 0) >= 1  # both sessions tagged
        assert httpx.get(s.url + "/v1/model").json()["serving"]["lanes"] == 2
    finally:
        assert s.stop() == 0


def test_load_benchmark_clients_get_the_servers_answers(server):
    """benchmarks/serve_load.py's load generators (the raw keep-alive client, aiohttp) against the real server:
    every request answered 200, none lost, the tweets counted."""
    sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
    import serve_load

    tweets = ["Obama visits London", "@user ur late lol", "New iPhone at #CES2016 http://t.co/x", "ok"]
    for lib in ("raw", "aiohttp"):
        got = asyncio.run(serve_load._drive(server.url, tweets, 4, 0.5, lib))
        assert got["ok"] > 0 and got["errors"] == 0 and got["statuses"] == {200: got["ok"]}, (lib, got)
        assert got["tweets_per_s"] > 0 and got["p50_ms"] > 0


@pytest.mark.parametrize(("content", "status", "needle"), [
    (b"{not json", 422, "not valid JSON"),
    (b'{"texts": "one string"}', 422, '"texts" must be a list'),
    (b'{"texts": [1]}', 422, "texts[0] must be a string"),
    (b'{"words": ["a b"]}', 422, "words[0] must be a list of strings"),
    (b'{"texts": [], "words": []}', 422, "exactly one key"),
    (b'{"text": ["a"]}', 422, "exactly one key"),
    (json.dumps({"texts": ["a"] * 17}).encode(), 413, "--max-texts"),
    (json.dumps({"texts": ["a" * 2001]}).encode(), 413, "--max-chars"),
    (json.dumps({"texts": ["a " * 750] * 15}).encode(), 413, "--max-body-bytes"),
])  # fmt: skip
def test_bad_requests_are_json_errors(server, content, status, needle):
    r = httpx.post(server.url + "/v1/tag", content=content, headers={"content-type": "application/json"})
    assert r.status_code == status
    assert needle in r.json()["error"]["message"] and r.json()["error"]["status"] == status


def test_other_endpoints(server, exported):
    assert httpx.get(server.url + "/healthz").json() == {"status": "alive"}
    model = httpx.get(server.url + "/v1/model").json()
    cfg = json.loads((exported / "nerdistil.json").read_text())
    assert model["labels"] == cfg["labels"] and model["quantization"] == cfg["gate"]["chosen"]
    assert model["gate"]["decision"] == cfg["gate"]["decision"] and model["batch_independent"] is True
    assert model["serving"]["lanes"] == 2 and model["serving"]["max_batch_size"] == 8
    spec = httpx.get(server.url + "/openapi.json").json()
    assert set(spec["paths"]) >= {"/v1/tag", "/healthz", "/readyz", "/metrics", "/v1/model"}
    r = httpx.get(server.url + "/nope")
    assert r.status_code == 404 and r.json()["error"]["status"] == 404
    assert httpx.get(server.url + "/v1/tag").status_code == 405


def test_not_ready_until_warmed_up(exported):
    """Before the lifespan has loaded the model and run a warm-up batch: 503 with Retry-After; then ready."""
    from starlette.testclient import TestClient

    from nerdistil.deploy.serve import create_app
    from nerdistil.settings import ServeConfig

    cfg = {**__import__("dataclasses").asdict(ServeConfig()), "model": str(exported), "threads": 1}
    app = create_app(cfg)
    cold = TestClient(app)  # no lifespan yet: nothing loaded
    assert cold.get("/readyz").status_code == 503
    r = cold.post("/v1/tag", json={"texts": ["Obama"]})
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    with TestClient(app) as warm:
        assert warm.get("/readyz").json() == {"ready": True}
        assert app.state.nerdistil.metrics.texts._value.get() == 1  # the warm-up batch ran
        assert warm.post("/v1/tag", json={"texts": ["Obama visits London"]}).status_code == 200


class _Stub:
    """Stands in for a Tagger in the scheduling test: the policy never tags."""


@pytest.mark.parametrize(("queued", "requests", "running", "lanes", "want"), [
    (0, 0, {"all": 0, "lane": 0}, 2, None),  # nothing to do
    (3, 3, {"all": 0, "lane": 0}, 2, "all"),  # a short batch: every thread
    (8, 1, {"all": 0, "lane": 0}, 2, "all"),  # one long request alone: every thread
    (8, 8, {"all": 0, "lane": 0}, 2, "lane"),  # a full batch of several requests: a one-thread lane
    (8, 1, {"all": 0, "lane": 1}, 2, "lane"),  # and a second one beside a running lane
    (8, 8, {"all": 0, "lane": 2}, 2, None),  # every lane busy
    (3, 3, {"all": 0, "lane": 1}, 2, None),  # a short batch waits for the lanes to end, then takes every thread
    (8, 8, {"all": 1, "lane": 0}, 2, None),  # nothing beside an all-threads run
    (8, 8, {"all": 0, "lane": 0}, 1, "all"),  # --lanes 1: one batch at a time on every thread
])  # fmt: skip
def test_batcher_runs_a_lone_request_on_every_thread_and_full_batches_side_by_side(queued, requests, running, lanes,
                                                                                     want):  # fmt: skip
    from types import SimpleNamespace

    from nerdistil.deploy.batcher import Batcher, Metrics

    b = Batcher(_Stub(), 8, 0.0, 100, Metrics(), _Stub(), lanes)  # type: ignore[arg-type]
    b.queue.extend(SimpleNamespace(request=i * requests // queued) for i in range(queued))  # type: ignore[misc]
    b.running.update(running)
    assert b._session() == want


def test_a_full_queue_sheds_load_and_recovers(exported, tmp_path):
    s = Server(exported, tmp_path / "log.txt", "--max-queue", "4", "--max-batch-size", "1", "--max-wait-ms", "0")
    try:

        async def flood():
            async with httpx.AsyncClient(base_url=s.url, timeout=60) as client:
                return await asyncio.gather(*(client.post("/v1/tag", json={"texts": [TWEETS[-1]] * 3})
                                              for _ in range(30)))  # fmt: skip

        statuses = [r.status_code for r in asyncio.run(flood())]
        assert set(statuses) <= {200, 429} and 429 in statuses and 200 in statuses
        shed = next(r for r in asyncio.run(flood()) if r.status_code == 429)
        assert shed.headers["retry-after"] == "1" and "queue is full" in shed.json()["error"]["message"]
        time.sleep(1)
        assert httpx.post(s.url + "/v1/tag", json={"texts": ["Obama"]}).status_code == 200  # recovered
        assert s.proc.poll() is None
    finally:
        assert s.stop() == 0
    assert "429" in (tmp_path / "log.txt").read_text()  # one log line per error, server side


def test_sigterm_drains_requests_in_flight_and_exits_0(exported, tmp_path):
    s = Server(exported, tmp_path / "log.txt", "--max-batch-size", "1")
    body = {"texts": [TWEETS[-1]] * 16}

    async def slow_request_then_term():
        async with httpx.AsyncClient(base_url=s.url, timeout=60) as client:
            pending = asyncio.ensure_future(client.post("/v1/tag", json=body))
            await asyncio.sleep(0.3)  # the request is in flight (16 long tweets, one at a time)
            s.proc.send_signal(signal.SIGTERM)
            return await pending

    t0 = time.time()
    r = asyncio.run(slow_request_then_term())
    assert r.status_code == 200 and len(r.json()["results"]) == 16
    assert s.proc.wait(timeout=60) == 0 and time.time() - t0 < 60
    with pytest.raises(httpx.HTTPError):  # no longer listening
        httpx.get(s.url + "/healthz", timeout=2)
