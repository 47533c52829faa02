"""Claude through the official ``anthropic`` SDK and its Messages API.

The system prompt, the tool definitions and the conversation so far are marked for prompt
caching, so each turn of a long session re-reads the shared prefix at the cache price.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import anthropic
from anthropic.types import (
    CacheControlEphemeralParam,
    MessageParam,
    TextBlockParam,
    ToolParam,
    ToolResultBlockParam,
    ToolUseBlockParam,
)
from anthropic.types import Message as Reply

from operator_ai.errors import ModelError, ModelRejected, ModelUnavailable
from operator_ai.models import (
    AssistantMessage,
    Message,
    Tool,
    ToolCall,
    Turn,
    Usage,
    UserMessage,
)

DEFAULT_MAX_TOKENS = 16_000
"""Room for thinking as well as the answer (models that think by default share it)."""
DEFAULT_MAX_RETRIES = 4
DEFAULT_TIMEOUT = 300.0
# Statuses worth another try: request timeout, conflict, rate limit, and every 5xx (529 is
# Anthropic's "overloaded"). The SDK retries the same ones; these are left after it gave up.
TRANSIENT = frozenset({408, 409, 429})
_CACHE: CacheControlEphemeralParam = {"type": "ephemeral"}

Block = TextBlockParam | ToolUseBlockParam | ToolResultBlockParam


class AnthropicModel:
    """A Claude model; ``complete`` sends one Messages API request (the SDK retries it)."""

    def __init__(
        self,
        spec: str,
        name: str,
        api_key: str,
        *,
        base_url: str | None = None,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        max_retries: int = DEFAULT_MAX_RETRIES,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.spec = spec
        self.name = name
        self.max_tokens = max_tokens
        self._key = api_key
        self._client = anthropic.Anthropic(
            api_key=api_key, base_url=base_url, max_retries=max_retries, timeout=timeout
        )

    def __repr__(self) -> str:
        return f"AnthropicModel({self.spec!r})"

    def close(self) -> None:
        """Release the HTTP connections."""
        self._client.close()

    def complete(self, system: str, messages: Sequence[Message], tools: Sequence[Tool]) -> Turn:
        """One turn. Raises ModelUnavailable after retries, ModelRejected on a refusal."""
        prompt = [TextBlockParam(type="text", text=system, cache_control=_CACHE)]
        try:
            reply = self._client.messages.create(
                model=self.name,
                max_tokens=self.max_tokens,
                system=prompt if system else anthropic.omit,
                tools=to_tools(tools) if tools else anthropic.omit,
                messages=to_messages(messages),
            )
        except anthropic.AnthropicError as exc:
            raise self._translate(exc) from exc
        return to_turn(reply)

    def _translate(self, exc: anthropic.AnthropicError) -> ModelError:
        if isinstance(exc, anthropic.APIStatusError):
            what = f"HTTP {exc.status_code} {exc.type or 'error'}: {exc.api_message or ''}"
            what = what.rstrip(": ").replace(self._key, "****")[:300]
            transient = exc.status_code in TRANSIENT or exc.status_code >= 500
            error = ModelUnavailable if transient else ModelRejected
            return error(f"anthropic {self.name}: {what}")
        if isinstance(exc, anthropic.APITimeoutError):
            return ModelUnavailable(f"anthropic {self.name}: the request timed out")
        if isinstance(exc, anthropic.APIConnectionError):
            return ModelUnavailable(f"anthropic {self.name}: cannot connect to the API")
        return ModelUnavailable(f"anthropic {self.name}: {type(exc).__name__}")


def to_tools(tools: Sequence[Tool]) -> list[ToolParam]:
    """Our tools as Anthropic tool definitions, the last one closing a cached prefix."""
    out = [
        ToolParam(name=t.name, description=t.description, input_schema=t.parameters) for t in tools
    ]
    out[-1]["cache_control"] = _CACHE
    return out


def to_messages(messages: Sequence[Message]) -> list[MessageParam]:
    """Our conversation as alternating user/assistant messages of content blocks."""
    out: list[tuple[str, list[Block]]] = []
    for message in messages:
        role, blocks = _blocks(message)
        if not blocks:
            continue  # the API refuses empty content; an empty reply leaves no trace
        if out and out[-1][0] == role:
            out[-1][1].extend(blocks)
        else:
            out.append((role, blocks))
    if out:
        out[-1][1][-1]["cache_control"] = _CACHE
    return [
        {"role": "user", "content": b} if r == "user" else {"role": "assistant", "content": b}
        for r, b in out
    ]


def _blocks(message: Message) -> tuple[str, list[Block]]:
    blocks: list[Block] = []
    if isinstance(message, UserMessage):
        if message.text:
            blocks.append({"type": "text", "text": message.text})
        return "user", blocks
    if isinstance(message, AssistantMessage):
        if message.turn.raw:  # as received: thinking blocks are signed and must come back whole
            return "assistant", [_echo(b) for b in message.turn.raw]
        if message.turn.text:
            blocks.append({"type": "text", "text": message.turn.text})
        for call in message.turn.tool_calls:
            blocks.append(
                {"type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments}
            )
        return "assistant", blocks
    for result in message.results:
        blocks.append(
            {
                "type": "tool_result",
                "tool_use_id": result.call_id,
                "content": result.content,
                "is_error": result.is_error,
            }
        )
    if message.text:
        blocks.append({"type": "text", "text": message.text})
    return "user", blocks


def _echo(block: dict[str, Any]) -> Block:
    """A block of an earlier reply, to send back: unchanged, except a tool call whose input
    was not an object (which the API would refuse to take back) gets an empty one."""
    echoed = dict(block)
    if echoed.get("type") == "tool_use" and not isinstance(echoed.get("input"), dict):
        echoed["input"] = {}
    return cast(Block, echoed)


def to_turn(reply: Reply) -> Turn:
    """The API's reply as our Turn."""
    texts: list[str] = []
    thoughts: list[str] = []
    calls: list[ToolCall] = []
    for block in reply.content:
        if block.type == "thinking" and block.thinking:  # adaptive thinking, when shown
            thoughts.append(block.thinking)
        elif block.type == "text":
            texts.append(block.text)
        elif block.type == "tool_use":
            arguments: object = block.input
            if isinstance(arguments, dict):
                calls.append(ToolCall(block.id, block.name, arguments))
            else:
                problem = f"arguments must be a JSON object, got {type(arguments).__name__}"
                calls.append(ToolCall(block.id, block.name, {}, error=problem))
    u = reply.usage
    usage = Usage(
        input_tokens=u.input_tokens,
        output_tokens=u.output_tokens,
        cache_read_tokens=u.cache_read_input_tokens or 0,
        cache_write_tokens=u.cache_creation_input_tokens or 0,
    )
    # As sent, even where it breaks the SDK's types (a non-object tool input): no warnings.
    raw = tuple(b.model_dump(mode="json", exclude_none=True, warnings=False) for b in reply.content)
    stop = reply.stop_reason or "end_turn"
    return Turn("\n".join(texts), tuple(calls), usage, stop, "\n".join(thoughts), raw)
