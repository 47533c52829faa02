"""A loopback HTTP server that speaks the Anthropic Messages and OpenAI Chat Completions wire
formats, so the adapters are tested through the real SDKs, their HTTP stack and their retries.

A test queues replies (status, JSON body, headers) and reads back what the server received.
Bodies are built by the helpers below, in the shapes the providers document.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# Retry at once: the SDKs read retry-after-ms first, and treat a 0 as "no advice" and back
# off for half a second or more instead.
FAST_RETRY = {"retry-after": "0", "retry-after-ms": "1"}
PATHS = ("/v1/messages", "/v1/chat/completions")


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to wait before answering


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]  # names in lower case
    body: Any


class LoopbackServer:
    """An HTTP server on a free 127.0.0.1 port, serving on a thread until ``close``."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self._closing = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = False  # server_close() waits for every handler
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def close(self) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


class FakeProvider(LoopbackServer):
    """Answers POSTs to either API with the queued replies, in order; then with ``always``."""

    def __init__(self) -> None:
        self.replies: deque[Reply] = deque()
        self.always: Reply | None = None
        self.received: list[Received] = []
        self._lock = threading.Lock()
        super().__init__(self._handler())

    def queue(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    def _next(self, path: str, headers: dict[str, str], body: Any) -> Reply:
        with self._lock:
            self.received.append(Received(path, headers, body))
            if self.replies:
                return self.replies.popleft()
        if self.always is not None:
            return self.always
        if path == "/v1/messages":
            return anthropic_error(500, "api_error", "fake server: no reply queued")
        return openai_error(500, "server_error", "fake server: no reply queued")

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                raw = self.rfile.read(length)
                if self.path not in PATHS:
                    self._send(Reply(404, {"error": {"message": f"no route {self.path}"}}))
                    return
                headers = {k.lower(): v for k, v in self.headers.items()}
                self._send(fake._next(self.path, headers, json.loads(raw)))

            def _send(self, reply: Reply) -> None:
                if reply.delay and fake._closing.wait(reply.delay):
                    return
                data = json.dumps(reply.body).encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting (a timeout test)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


@contextmanager
def fake_provider() -> Iterator[FakeProvider]:
    server = FakeProvider()
    try:
        yield server
    finally:
        server.close()


# --- Anthropic Messages API ---


def anthropic_message(
    *content: dict[str, Any],
    stop_reason: str = "end_turn",
    input_tokens: int = 10,
    output_tokens: int = 5,
    cache_read: int = 0,
    cache_write: int = 0,
    model: str = "claude-sonnet-4-5",
) -> Reply:
    return Reply(
        200,
        {
            "id": "msg_01Test",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": list(content),
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": {
                "input_tokens": input_tokens,
                "output_tokens": output_tokens,
                "cache_read_input_tokens": cache_read,
                "cache_creation_input_tokens": cache_write,
            },
        },
        {"request-id": "req_01Test"},
    )


def text_block(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def tool_use_block(call_id: str, name: str, arguments: Any) -> dict[str, Any]:
    return {"type": "tool_use", "id": call_id, "name": name, "input": arguments}


def anthropic_error(status: int, kind: str, message: str) -> Reply:
    body = {
        "type": "error",
        "error": {"type": kind, "message": message},
        "request_id": "req_01Error",
    }
    return Reply(status, body, FAST_RETRY if status >= 429 else {})


# --- OpenAI Chat Completions API ---


def openai_completion(
    content: str | None,
    *tool_calls: dict[str, Any],
    finish_reason: str = "stop",
    prompt_tokens: int = 10,
    completion_tokens: int = 5,
    cached_tokens: int | None = None,
    model: str = "gpt-4.1",
) -> Reply:
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
    if tool_calls:
        message["tool_calls"] = list(tool_calls)
    usage: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    if cached_tokens is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": cached_tokens, "audio_tokens": 0}
    return Reply(
        200,
        {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "created": 1_760_000_000,
            "model": model,
            "choices": [
                {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}
            ],
            "usage": usage,
        },
    )


def function_call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def openai_error(status: int, kind: str, message: str, code: str | None = None) -> Reply:
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return Reply(status, body, FAST_RETRY if status >= 429 else {})
