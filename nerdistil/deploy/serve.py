"""``nerdistil serve``: an export folder behind HTTP (Starlette on uvicorn), batching texts across requests.

One ONNX Runtime session per process, and a second one-thread session for ``lanes``. Requests put their texts on
one bounded queue; one batcher takes up to ``max_batch_size`` of them, waiting at most ``max_wait_ms`` for more, and
tags them off the event loop (``Tagger`` in a worker thread), so concurrent requests share forward passes. A lone
batch runs on every thread; when full batches queue up, up to ``lanes`` of them run at once, one thread each
(``Batcher``). A text's result never
depends on the texts that share its batch: ``Tagger`` runs windows of one padded length together (fp32
windows are padded to a multiple of 8 subwords, a length that depends on the window alone), and an int8
graph, whose dynamic activation scales span the whole batch, runs every window alone
(``Tagger.batch_independent``). Errors are JSON, never a stack trace: 422 for a malformed request,
413 for one over a limit, 429 with ``Retry-After`` when the queue is full, 503 until the model is loaded
and warmed up. On SIGTERM readiness turns false, the listener closes, requests in flight finish (at most
``drain_s``) and the process exits 0. Imports onnxruntime, starlette, uvicorn and prometheus_client,
never torch.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import signal
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from nerdistil.deploy.batcher import Batcher, Metrics, QueueFull
from nerdistil.deploy.runtime import MODEL, Tagger

log = logging.getLogger("nerdistil.serve")
CONFIG_ENV = "NERDISTIL_SERVE_CONFIG"  # the settings, as JSON, for uvicorn's worker processes
WARM_UP = "Warm-up tweet for @nerdistil in London #ready"  # tagged once on each session before readiness


class _State:
    def __init__(self, cfg: dict) -> None:
        self.cfg = cfg
        self.metrics = Metrics()
        self.ready = False
        self.tagger: Tagger | None = None
        self.batcher: Batcher | None = None
        self.sha256 = ""


def _error(status: int, message: str, headers: dict | None = None):
    from starlette.responses import JSONResponse

    return JSONResponse({"error": {"status": status, "message": message}}, status, headers=headers)


def _items(payload: Any, cfg: dict) -> tuple[str, list] | tuple[int, str]:
    """(kind, items) of a request body, or (status, message) when it is malformed or over a limit."""
    if not isinstance(payload, dict) or len(payload.keys() & {"texts", "words"}) != 1 or set(payload) - {
            "texts", "words"}:  # fmt: skip
        return 422, 'the body must be a JSON object with exactly one key: "texts" (strings) or "words" (lists)'
    kind, items = next(iter(payload.items()))
    if not isinstance(items, list):
        return 422, f'"{kind}" must be a list'
    if len(items) > cfg["max_texts"]:
        return 413, f"{len(items)} items in one request; at most {cfg['max_texts']} (--max-texts)"
    for i, item in enumerate(items):
        if kind == "texts" and not isinstance(item, str):
            return 422, f"texts[{i}] must be a string"
        if kind == "words" and (not isinstance(item, list) or not all(isinstance(w, str) for w in item)):
            return 422, f"words[{i}] must be a list of strings"
        size = len(item) if kind == "texts" else sum(map(len, item)) + max(0, len(item) - 1)
        if size > cfg["max_chars"]:
            return 413, f"{kind}[{i}] has {size} characters; at most {cfg['max_chars']} (--max-chars)"
    return kind, items


def create_app(cfg: dict | None = None):
    """The Starlette application for the settings ``cfg`` (a ``ServeConfig`` as a dict; default: from the env)."""
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import ClientDisconnect, Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    cfg = cfg if cfg is not None else json.loads(os.environ[CONFIG_ENV])
    state = _State(cfg)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        loop = asyncio.get_running_loop()
        threads = cfg.get("threads") or max(1, (os.cpu_count() or 1) // max(1, cfg["workers"]))
        lanes = cfg.get("lanes") or threads
        state.tagger = await loop.run_in_executor(None, lambda: Tagger(cfg["model"], threads))
        lane_tagger = None  # one-thread runs side by side; a one-thread tagger is its own lane session
        if lanes > 1:
            lane_tagger = state.tagger if threads == 1 else await loop.run_in_executor(None, Tagger, cfg["model"], 1)
        state.sha256 = await loop.run_in_executor(None, _sha256, Path(cfg["model"]) / MODEL)
        state.batcher = Batcher(state.tagger, cfg["max_batch_size"], cfg["max_wait_ms"] / 1000, cfg["max_queue"],
                                state.metrics, lane_tagger, lanes)  # fmt: skip
        state.batcher.start()
        await state.batcher.submit("texts", [WARM_UP])  # one real batch
        if lane_tagger is not None:  # and one on the lane session
            await loop.run_in_executor(None, lane_tagger.tag, [WARM_UP])
        _not_ready_on_sigterm(state)
        state.ready = True
        log.info("ready: %s (%s, %d labels) on %d ONNX Runtime threads, %d lane(s)", cfg["model"],
                 state.tagger.describe()["quantization"], len(state.tagger.labels), threads,
                 state.batcher.lanes)  # fmt: skip
        yield
        state.ready = False
        await state.batcher.close(max(1.0, cfg["drain_s"]))

    async def tag(request: Request) -> Response:
        if not state.ready:
            return _error(503, "not ready: the model is loading or the server is shutting down", {"Retry-After": "1"})
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > cfg["max_body_bytes"]:
            return _error(413, f"body of {declared} bytes; at most {cfg['max_body_bytes']} (--max-body-bytes)")
        body = bytearray()
        try:
            async for chunk in request.stream():
                body += chunk
                if len(body) > cfg["max_body_bytes"]:
                    return _error(413, f"body over {cfg['max_body_bytes']} bytes (--max-body-bytes)")
        except ClientDisconnect:
            return Response(status_code=499)
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError) as e:
            return _error(422, f"the body is not valid JSON ({e})")
        parsed = _items(payload, cfg)
        if isinstance(parsed[0], int):
            return _error(*parsed)  # type: ignore[arg-type]
        kind, items = parsed
        try:
            results = await state.batcher.submit(kind, items) if items else []  # type: ignore[union-attr]
        except QueueFull:
            return _error(429, f"the queue is full ({cfg['max_queue']} texts waiting); retry shortly",
                          {"Retry-After": "1"})  # fmt: skip
        return JSONResponse({"model_sha256": state.sha256, "results": results})

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "alive"})

    async def readyz(request: Request) -> Response:
        return JSONResponse({"ready": state.ready}, 200 if state.ready else 503)

    async def metrics(request: Request) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def model(request: Request) -> Response:
        if state.tagger is None:
            return _error(503, "not ready: the model is loading", {"Retry-After": "1"})
        serving = {k: cfg[k] for k in ("max_batch_size", "max_wait_ms", "max_queue", "max_texts", "max_chars")}
        serving["lanes"] = state.batcher.lanes if state.batcher else None
        return JSONResponse({**state.tagger.describe(), "sha256": state.sha256, "serving": serving,
                             "batch_independent": state.tagger.batch_independent})  # fmt: skip

    async def openapi(request: Request) -> Response:
        return JSONResponse(OPENAPI)

    async def not_found(request: Request, exc: Exception) -> Response:
        return _error(getattr(exc, "status_code", 404), getattr(exc, "detail", None) or "not found")

    async def crashed(request: Request, exc: Exception) -> Response:
        log.error("%s %s failed: %s: %s", request.method, request.url.path, type(exc).__name__, exc)
        return _error(500, "internal error; the server logged it")

    routes = [Route("/v1/tag", tag, methods=["POST"]), Route("/healthz", healthz), Route("/readyz", readyz),
              Route("/metrics", metrics), Route("/v1/model", model), Route("/openapi.json", openapi)]  # fmt: skip
    app = Starlette(routes=routes, lifespan=lifespan, middleware=[Middleware(_Count, state=state)],
                    exception_handlers={404: not_found, 405: not_found, Exception: crashed})  # fmt: skip
    app.state.nerdistil = state
    return app


PATHS = {"/v1/tag", "/healthz", "/readyz", "/metrics", "/v1/model", "/openapi.json"}


class _Count:
    """ASGI middleware: requests by path and status, latency, and one log line per error response."""

    def __init__(self, app, state: _State) -> None:
        self.app, self.state = app, state

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0, status = time.perf_counter(), [500]

        async def sending(message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            path = scope["path"] if scope["path"] in PATHS else "other"
            if status[0] >= 400:
                log.warning("%s %s -> %d", scope["method"], scope["path"], status[0])
            self.state.metrics.requests.labels(path, str(status[0])).inc()
            self.state.metrics.latency.labels(path).observe(time.perf_counter() - t0)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _not_ready_on_sigterm(state: _State) -> None:
    """Readiness turns false the moment SIGTERM arrives; uvicorn's own handler then drains and stops."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)

        def handler(signum, frame, previous=previous) -> None:
            state.ready = False
            if callable(previous):
                previous(signum, frame)

        with contextlib.suppress(ValueError):  # not the main thread (an embedded server): uvicorn's alone
            signal.signal(sig, handler)


def run_serve(cfg) -> dict:
    """Serve until SIGTERM or Ctrl-C; returns {} (nothing to tabulate)."""
    import uvicorn

    from nerdistil.errors import UserError

    Tagger(cfg.model, 1)  # a broken folder is a one-line error before the port opens
    settings = {**asdict(cfg), "model": str(cfg.model)}
    os.environ[CONFIG_ENV] = json.dumps(settings)
    # uvicorn re-raises the signal that stopped it once it has drained; ignored here, so a drained server exits 0
    signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        uvicorn.run("nerdistil.deploy.serve:create_app", factory=True, host=cfg.host, port=cfg.port,
                    workers=cfg.workers, timeout_graceful_shutdown=int(max(1, cfg.drain_s)), log_level="info",
                    access_log=False)  # fmt: skip
    except OSError as e:
        raise UserError(f"cannot listen on {cfg.host}:{cfg.port} ({e.strerror}); choose another --port") from None
    return {}


OPENAPI: dict = {
    "openapi": "3.1.0",
    "info": {"title": "nerdistil serve", "version": "1"},
    "paths": {
        "/v1/tag": {"post": {
            "summary": "Tag raw tweets or pre-split sentences",
            "requestBody": {"required": True, "content": {"application/json": {"schema": {"oneOf": [
                {"type": "object", "required": ["texts"], "additionalProperties": False,
                 "properties": {"texts": {"type": "array", "items": {"type": "string"}}}},
                {"type": "object", "required": ["words"], "additionalProperties": False,
                 "properties": {"words": {"type": "array", "items": {"type": "array", "items": {"type": "string"}}}}},
            ]}}}},
            "responses": {
                "200": {"description": "Per item, in order: words, tags, scores and entities (character offsets "
                        "into each text); and the model's SHA-256", "content": {"application/json": {"schema": {
                            "type": "object", "properties": {
                                "model_sha256": {"type": "string"},
                                "results": {"type": "array", "items": {"type": "object"}}}}}}},
                "413": {"description": "Over --max-body-bytes, --max-texts or --max-chars"},
                "422": {"description": "Not JSON, or not the schema above"},
                "429": {"description": "Queue full; see Retry-After"},
                "503": {"description": "Not ready (loading, warming up or shutting down); see Retry-After"},
            },
        }},
        "/healthz": {"get": {"summary": "The process is alive", "responses": {"200": {"description": "alive"}}}},
        "/readyz": {"get": {"summary": "Loaded, warmed up and not shutting down",
                            "responses": {"200": {"description": "ready"}, "503": {"description": "not ready"}}}},
        "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text format"}}}},
        "/v1/model": {"get": {"summary": "Labels, quantization and the int8 gate's record",
                              "responses": {"200": {"description": "the model"}}}},
    },
}  # fmt: skip
