"""A local OpenAI-compatible chat server that answers with the simulated MLLM.

It exists so that the `openai` backend is exercised for real (HTTP, base64 images, concurrency,
timeouts, retries) without a GPU: tests and `make bench` start it on loopback with injected
latency and faults. Try the backend by hand with it:

    python -m mvft_helpers.sim_server --world data/toy-demo-seed0 --port 8011
    python -m mvft_helpers.synthesize --backend openai --base-url http://127.0.0.1:8011/v1 \
        --model simulated --images data/toy-demo-seed0/unlabeled/images --out work/store.jsonl
"""
from __future__ import annotations

import argparse
import base64
import contextlib
import json
import random
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .mllm import ChatRequest, SimulatedMLLM


@dataclass
class Faults:
    latency: float = 0.0          # seconds added to every answer
    http_500: float = 0.0         # probability of an HTTP 500
    timeout: float = 0.0          # probability of answering only after `timeout_after` seconds
    timeout_after: float = 5.0
    seed: int = 0


def _parse_messages(messages: list[dict]) -> tuple[ChatRequest, bytes | None]:
    system, image, turns, pending = "", None, [], None
    for m in messages:
        content = m.get("content")
        if m["role"] == "system":
            system = content if isinstance(content, str) else ""
        elif m["role"] == "user":
            text = content if isinstance(content, str) else ""
            if isinstance(content, list):
                for part in content:
                    if part.get("type") == "text":
                        text += part["text"]
                    elif part.get("type") == "image_url":
                        url = part["image_url"]["url"]
                        image = base64.b64decode(url.split(",", 1)[1])
            pending = text
        elif m["role"] == "assistant":
            turns.append((pending or "", content or ""))
            pending = None
    return ChatRequest(key="http", prompt=pending or "", system=system, history=turns), image


def make_handler(sim: SimulatedMLLM, faults: Faults, counter: dict):
    rng = random.Random(faults.seed)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):   # quiet
            pass

        def _send(self, code: int, body: dict):
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self):
            if not self.path.rstrip("/").endswith("/chat/completions"):
                return self._send(404, {"error": {"message": f"no route {self.path}"}})
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            with lock:
                counter["requests"] = counter.get("requests", 0) + 1
                u = rng.random()
            if faults.latency:
                time.sleep(faults.latency)
            if u < faults.http_500:
                with lock:
                    counter["http_500"] = counter.get("http_500", 0) + 1
                return self._send(500, {"error": {"message": "injected fault"}})
            if u < faults.http_500 + faults.timeout:
                with lock:
                    counter["timeouts"] = counter.get("timeouts", 0) + 1
                time.sleep(faults.timeout_after)
            req, image = _parse_messages(body["messages"])
            try:
                scene = sim.scene_of_bytes(image) if image else None
            except KeyError as e:
                return self._send(400, {"error": {"message": str(e)}})
            answer = sim.answer(req, scene)
            self._send(200, {"id": "sim", "object": "chat.completion", "model": body.get("model"),
                             "choices": [{"index": 0, "finish_reason": "stop",
                                          "message": {"role": "assistant", "content": answer}}]})

    return Handler


@contextlib.contextmanager
def running_server(sim: SimulatedMLLM, faults: Faults | None = None, host: str = "127.0.0.1",
                   port: int = 0):
    """Serve on loopback in a background thread; yields (base_url, counter)."""
    counter: dict = {}
    server = ThreadingHTTPServer((host, port), make_handler(sim, faults or Faults(), counter))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}/v1", counter
    finally:
        server.shutdown()
        server.server_close()


def main(argv=None) -> int:
    from .mllm import REALISTIC, SimulatedErrors

    ap = argparse.ArgumentParser(prog="python -m mvft_helpers.sim_server", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world", required=True)
    ap.add_argument("--port", type=int, default=8011)
    ap.add_argument("--errors", choices=("none", "realistic"), default="realistic")
    ap.add_argument("--latency", type=float, default=0.0)
    a = ap.parse_args(argv)
    sim = SimulatedMLLM(a.world, REALISTIC if a.errors == "realistic" else SimulatedErrors())
    with running_server(sim, Faults(latency=a.latency), port=a.port) as (url, _):
        print(f"serving the simulated MLLM at {url} (Ctrl-C to stop)", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
