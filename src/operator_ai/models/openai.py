"""OpenAI and every server that speaks its Chat Completions API (vLLM, Ollama, llama.cpp,
LM Studio...), through the official ``openai`` SDK."""

from __future__ import annotations

import json
from collections.abc import Sequence

import openai
from openai.types import CompletionUsage
from openai.types.chat import (
    ChatCompletion,
    ChatCompletionFunctionToolParam,
    ChatCompletionMessageFunctionToolCallParam,
    ChatCompletionMessageParam,
)

from operator_ai.errors import ModelError, ModelRejected, ModelUnavailable
from operator_ai.models import (
    AssistantMessage,
    Message,
    Tool,
    ToolCall,
    Turn,
    Usage,
    UserMessage,
    call_from_json,
)

DEFAULT_MAX_RETRIES = 4
DEFAULT_TIMEOUT = 300.0
# Statuses worth another try (and every 5xx); the SDK retries the same ones before we see them.
TRANSIENT = frozenset({408, 409, 429})
# finish_reason in the words the rest of Operator uses (Anthropic's stop reasons).
STOP_REASONS = {"stop": "end_turn", "tool_calls": "tool_use", "length": "max_tokens"}


class OpenAIModel:
    """A chat model behind an OpenAI-compatible endpoint."""

    def __init__(
        self,
        spec: str,
        name: str,
        api_key: str,
        *,
        base_url: str | None = None,
        max_tokens: int | None = None,
        max_retries: int = DEFAULT_MAX_RETRIES,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.spec = spec
        self.name = name
        self.max_tokens = max_tokens
        self._key = api_key
        self._client = openai.OpenAI(
            api_key=api_key, base_url=base_url, max_retries=max_retries, timeout=timeout
        )

    def __repr__(self) -> str:
        return f"OpenAIModel({self.spec!r})"

    def close(self) -> None:
        """Release the HTTP connections."""
        self._client.close()

    def complete(self, system: str, messages: Sequence[Message], tools: Sequence[Tool]) -> Turn:
        """One turn. Raises ModelUnavailable after retries, ModelRejected on a refusal."""
        try:
            reply = self._client.chat.completions.create(
                model=self.name,
                messages=to_messages(system, messages),
                tools=to_tools(tools) if tools else openai.omit,
                max_completion_tokens=self.max_tokens or openai.omit,
            )
        except openai.OpenAIError as exc:
            raise self._translate(exc) from exc
        if not reply.choices:
            raise ModelUnavailable(f"openai {self.name}: the reply had no choices")
        return to_turn(reply)

    def _translate(self, exc: openai.OpenAIError) -> ModelError:
        if isinstance(exc, openai.APIStatusError):
            body = exc.body if isinstance(exc.body, dict) else {}
            message = str(body.get("message") or "")
            what = f"HTTP {exc.status_code} {exc.code or exc.type or 'error'}: {message}"
            what = what.rstrip(": ").replace(self._key, "****")[:300]
            transient = exc.status_code in TRANSIENT or exc.status_code >= 500
            error = ModelUnavailable if transient else ModelRejected
            return error(f"openai {self.name}: {what}")
        if isinstance(exc, openai.APITimeoutError):
            return ModelUnavailable(f"openai {self.name}: the request timed out")
        if isinstance(exc, openai.APIConnectionError):
            return ModelUnavailable(
                f"openai {self.name}: cannot connect to {self._client.base_url}"
            )
        return ModelUnavailable(f"openai {self.name}: {type(exc).__name__}")


def to_tools(tools: Sequence[Tool]) -> list[ChatCompletionFunctionToolParam]:
    """Our tools as function tools."""
    return [
        {
            "type": "function",
            "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
        }
        for t in tools
    ]


def to_messages(system: str, messages: Sequence[Message]) -> list[ChatCompletionMessageParam]:
    """Our conversation as chat messages: tool results become ``tool`` messages."""
    out: list[ChatCompletionMessageParam] = []
    if system:
        out.append({"role": "system", "content": system})
    for message in messages:
        if isinstance(message, UserMessage):
            out.append({"role": "user", "content": message.text})
        elif isinstance(message, AssistantMessage):
            turn = message.turn
            if not turn.text and not turn.tool_calls:
                continue  # an empty reply; the user message after it says so
            calls: list[ChatCompletionMessageFunctionToolCallParam] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
                }
                for c in turn.tool_calls
            ]
            if calls:
                out.append({"role": "assistant", "content": turn.text or None, "tool_calls": calls})
            else:
                out.append({"role": "assistant", "content": turn.text})
        else:
            for r in message.results:
                out.append({"role": "tool", "tool_call_id": r.call_id, "content": r.content})
            if message.text:
                out.append({"role": "user", "content": message.text})
    return out


def to_turn(reply: ChatCompletion) -> Turn:
    """The first choice of the reply as our Turn."""
    choice = reply.choices[0]
    message = choice.message
    calls: list[ToolCall] = []
    for call in message.tool_calls or ():
        if call.type == "function":
            calls.append(call_from_json(call.id, call.function.name, call.function.arguments))
        else:
            calls.append(ToolCall(call.id, call.custom.name, {}, error="not a function call"))
    reason = str(choice.finish_reason or "stop")
    return Turn(
        message.content or message.refusal or "",
        tuple(calls),
        to_usage(reply.usage),
        STOP_REASONS.get(reason, reason),
    )


def to_usage(usage: CompletionUsage | None) -> Usage:
    """Tokens billed; ``prompt_tokens`` counts cached ones too, so they are taken out."""
    if usage is None:
        return Usage()
    details = usage.prompt_tokens_details
    read = (details.cached_tokens or 0) if details else 0
    write = (details.cache_write_tokens or 0) if details else 0
    return Usage(
        input_tokens=max(usage.prompt_tokens - read - write, 0),
        output_tokens=usage.completion_tokens,
        cache_read_tokens=read,
        cache_write_tokens=write,
    )
