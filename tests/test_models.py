"""The model adapters through the official SDKs against a loopback server speaking each
provider's wire format; spec parsing; the scripted model; prices."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anthropic
import pytest
from pydantic import SecretStr

from fake_providers import (
    FakeProvider,
    Reply,
    anthropic_error,
    anthropic_message,
    fake_provider,
    function_call,
    openai_completion,
    openai_error,
    text_block,
    tool_use_block,
)
from operator_ai.config import Settings
from operator_ai.errors import ModelRejected, ModelUnavailable, NoModel
from operator_ai.models import (
    SHELL,
    AssistantMessage,
    Message,
    Model,
    ToolCall,
    ToolResult,
    ToolResults,
    Turn,
    Usage,
    UserMessage,
)
from operator_ai.models.anthropic import AnthropicModel, to_messages
from operator_ai.models.openai import OpenAIModel
from operator_ai.models.prices import cost, price
from operator_ai.models.scripted import EXHAUSTED, ScriptedModel
from operator_ai.models.spec import load_model

ANTHROPIC_KEY = "sk-ant-test-0123456789abcdef"
OPENAI_KEY = "sk-test-fedcba9876543210"
# Not in the SDK's list of deprecated models, which warns (an error under our pytest).
CLAUDE = "claude-haiku-4-5"
CALL = ToolCall("toolu_01", "shell", {"command": "etcdctl endpoint health", "reasoning": "look"})


@pytest.fixture
def server() -> Iterator[FakeProvider]:
    with fake_provider() as s:
        yield s


@pytest.fixture
def claude(server: FakeProvider) -> Iterator[AnthropicModel]:
    model = AnthropicModel(
        f"anthropic:{CLAUDE}@{server.url}", CLAUDE, ANTHROPIC_KEY, base_url=server.url
    )
    try:
        yield model
    finally:
        model.close()


@pytest.fixture
def gpt(server: FakeProvider) -> Iterator[OpenAIModel]:
    model = OpenAIModel("openai:gpt-4.1", "gpt-4.1", OPENAI_KEY, base_url=f"{server.url}/v1")
    try:
        yield model
    finally:
        model.close()


def settings(tmp_path: Path, **values: Any) -> Settings:
    return Settings(home=tmp_path, db=f"sqlite:///{tmp_path / 'operator.db'}", **values)


def conversation() -> list[Message]:
    return [
        UserMessage("etcd is unhealthy"),
        AssistantMessage(Turn("Checking.", (CALL,), Usage(1, 1), "tool_use")),
        ToolResults((ToolResult("toolu_01", "exit code 1: member down", is_error=True),), "hurry"),
    ]


@contextmanager
def loaded(spec: str, conf: Settings) -> Iterator[Model]:
    """``load_model``, with the model's connections closed afterwards."""
    model = load_model(spec, conf)
    try:
        yield model
    finally:
        if isinstance(model, AnthropicModel | OpenAIModel):
            model.close()


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# --- Anthropic ---


def test_anthropic_tool_call_round_trip(server: FakeProvider, claude: AnthropicModel) -> None:
    server.queue(
        anthropic_message(
            text_block("Restarting the member."),
            tool_use_block("toolu_02", "shell", {"command": "systemctl restart etcd2"}),
            stop_reason="tool_use",
            input_tokens=50,
            output_tokens=20,
            cache_read=1000,
            cache_write=300,
        )
    )
    turn = claude.complete("You operate etcd.", conversation(), [SHELL])

    assert turn.text == "Restarting the member."
    assert turn.tool_calls == (
        ToolCall("toolu_02", "shell", {"command": "systemctl restart etcd2"}),
    )
    assert turn.stop_reason == "tool_use"
    assert turn.usage == Usage(50, 20, cache_read_tokens=1000, cache_write_tokens=300)

    [request] = server.received
    assert request.path == "/v1/messages"
    assert request.headers["authorization"] == f"Bearer {ANTHROPIC_KEY}"
    body = request.body
    assert body["model"] == CLAUDE and body["max_tokens"] == 16_000
    ephemeral = {"type": "ephemeral"}
    assert body["system"] == [
        {"type": "text", "text": "You operate etcd.", "cache_control": ephemeral}
    ]
    assert body["tools"] == [
        {
            "name": "shell",
            "description": SHELL.description,
            "input_schema": SHELL.parameters,
            "cache_control": ephemeral,
        }
    ]
    user, assistant, results = body["messages"]
    assert user == {"role": "user", "content": [{"type": "text", "text": "etcd is unhealthy"}]}
    assert assistant == {
        "role": "assistant",
        "content": [
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "toolu_01", "name": "shell", "input": CALL.arguments},
        ],
    }
    assert results == {
        "role": "user",
        "content": [
            {
                "type": "tool_result",
                "tool_use_id": "toolu_01",
                "content": "exit code 1: member down",
                "is_error": True,
            },
            {"type": "text", "text": "hurry", "cache_control": ephemeral},
        ],
    }
    assert json.dumps(body).count("cache_control") == 3  # one breakpoint each, no more


def test_anthropic_thinking_is_the_reasoning_and_goes_back_exactly_as_received(
    server: FakeProvider, claude: AnthropicModel
) -> None:
    # Adaptive thinking (on by default for Claude 5.x): the reply's thinking blocks are
    # signed, and the next request must carry them back unchanged beside the tool call.
    thinking = {"type": "thinking", "thinking": "etcd2 exited; start it.", "signature": "c2ln"}
    redacted = {"type": "redacted_thinking", "data": "ZW5jcnlwdGVk"}
    call = tool_use_block("toolu_09", "shell", {"command": "supervisorctl start etcd2"})
    server.queue(
        anthropic_message(thinking, redacted, call, stop_reason="tool_use"),
        anthropic_message(text_block("Started.")),
    )
    first = claude.complete("You operate etcd.", [UserMessage("etcd2 is down")], [SHELL])
    assert (first.thinking, first.text) == ("etcd2 exited; start it.", "")
    assert first.tool_calls == (ToolCall("toolu_09", "shell", call["input"]),)

    follow = [UserMessage("etcd2 is down"), AssistantMessage(first),
              ToolResults((ToolResult("toolu_09", "etcd2: started"),))]  # fmt: skip
    assert claude.complete("You operate etcd.", follow, [SHELL]).text == "Started."
    echoed = server.received[1].body["messages"][1]
    assert echoed == {"role": "assistant", "content": [thinking, redacted, call]}


def test_anthropic_without_tools_skips_empty_replies_and_merges_turns(
    server: FakeProvider, claude: AnthropicModel
) -> None:
    server.queue(anthropic_message(text_block("Node 2 is down."), text_block("That is all.")))
    messages: list[Message] = [
        UserMessage("summarise"),
        AssistantMessage(Turn("")),
        UserMessage("again"),
    ]
    turn = claude.complete("", messages, [])

    assert turn.text == "Node 2 is down.\nThat is all."
    assert turn.tool_calls == () and turn.stop_reason == "end_turn"
    body = server.received[0].body
    assert "tools" not in body and "system" not in body
    assert body["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "summarise"},
                {"type": "text", "text": "again", "cache_control": {"type": "ephemeral"}},
            ],
        }
    ]


def test_anthropic_input_that_is_not_an_object_becomes_an_error_call(
    server: FakeProvider, claude: AnthropicModel
) -> None:
    server.queue(
        anthropic_message(tool_use_block("toolu_03", "shell", ["ls"]), stop_reason="tool_use")
    )
    turn = claude.complete("s", [UserMessage("go")], [SHELL])
    [call] = turn.tool_calls
    assert (call.id, call.name, call.arguments) == ("toolu_03", "shell", {})
    assert call.error == "arguments must be a JSON object, got list"
    # Sent back, the call carries an empty object: the API takes no other kind of input.
    results = ToolResults((ToolResult("toolu_03", "error: bad arguments", is_error=True),))
    _, echoed, _ = to_messages([UserMessage("go"), AssistantMessage(turn), results])
    assert echoed["content"] == [{"type": "tool_use", "id": "toolu_03", "name": "shell",
                                  "input": {}}]  # fmt: skip


def test_anthropic_rate_limit_is_retried(server: FakeProvider, claude: AnthropicModel) -> None:
    server.queue(
        anthropic_error(
            429, "rate_limit_error", "Number of request tokens has exceeded your limit"
        ),
        anthropic_message(text_block("ok")),
    )
    assert claude.complete("s", [UserMessage("go")], []).text == "ok"
    assert len(server.received) == 2
    assert server.received[1].headers["x-stainless-retry-count"] == "1"


def test_anthropic_overload_is_retried_then_unavailable(
    server: FakeProvider, claude: AnthropicModel
) -> None:
    server.queue(anthropic_error(529, "overloaded_error", "Overloaded"))
    server.queue(anthropic_message(text_block("back")))
    assert claude.complete("s", [UserMessage("go")], []).text == "back"

    server.always = anthropic_error(529, "overloaded_error", "Overloaded")
    with pytest.raises(ModelUnavailable) as caught:
        claude.complete("s", [UserMessage("go")], [])
    assert str(caught.value) == f"anthropic {CLAUDE}: HTTP 529 overloaded_error: Overloaded"
    assert len(server.received) == 2 + 5  # the first call's two, then 1 try and 4 retries


def test_anthropic_server_error_that_persists_is_unavailable(
    server: FakeProvider, claude: AnthropicModel
) -> None:
    server.always = anthropic_error(500, "api_error", "Internal server error")
    with pytest.raises(ModelUnavailable, match="HTTP 500 api_error") as caught:
        claude.complete("s", [UserMessage("go")], [])
    assert isinstance(caught.value.__cause__, anthropic.InternalServerError)  # raised from it
    assert len(server.received) == 5


def test_anthropic_bad_key_is_rejected_at_once_and_never_shown(
    server: FakeProvider, claude: AnthropicModel
) -> None:
    server.always = anthropic_error(401, "authentication_error", f"invalid key {ANTHROPIC_KEY}")
    with pytest.raises(ModelRejected) as caught:
        claude.complete("s", [UserMessage("go")], [])
    assert len(server.received) == 1
    assert "HTTP 401 authentication_error: invalid key ****" in str(caught.value)
    assert ANTHROPIC_KEY not in str(caught.value) and ANTHROPIC_KEY not in repr(caught.value)
    assert ANTHROPIC_KEY not in repr(claude)


def test_anthropic_bad_request_is_rejected(server: FakeProvider, claude: AnthropicModel) -> None:
    server.always = anthropic_error(400, "invalid_request_error", "max_tokens: too large")
    with pytest.raises(ModelRejected, match="HTTP 400 invalid_request_error: max_tokens"):
        claude.complete("s", [UserMessage("go")], [])
    assert len(server.received) == 1


def test_anthropic_connection_refused_is_unavailable() -> None:
    model = AnthropicModel(
        "anthropic:x", CLAUDE, ANTHROPIC_KEY, base_url=closed_port_url(), max_retries=1
    )
    try:
        with pytest.raises(ModelUnavailable, match="cannot connect"):
            model.complete("s", [UserMessage("go")], [])
    finally:
        model.close()


def test_anthropic_timeout_is_unavailable(server: FakeProvider) -> None:
    server.always = Reply(200, {}, delay=30)
    model = AnthropicModel(
        "anthropic:x", CLAUDE, ANTHROPIC_KEY, base_url=server.url, max_retries=0, timeout=0.3
    )
    try:
        with pytest.raises(ModelUnavailable, match="timed out"):
            model.complete("s", [UserMessage("go")], [])
    finally:
        model.close()


# --- OpenAI-compatible ---


def test_openai_tool_call_round_trip(server: FakeProvider, gpt: OpenAIModel) -> None:
    server.queue(
        openai_completion(
            None,
            function_call("call_9", "shell", '{"command": "df -h", "reasoning": "disk"}'),
            finish_reason="tool_calls",
            prompt_tokens=1500,
            completion_tokens=40,
            cached_tokens=1024,
        )
    )
    turn = gpt.complete("You operate etcd.", conversation(), [SHELL])

    assert turn.text == ""
    assert turn.tool_calls == (
        ToolCall("call_9", "shell", {"command": "df -h", "reasoning": "disk"}),
    )
    assert turn.stop_reason == "tool_use"
    assert turn.usage == Usage(1500 - 1024, 40, cache_read_tokens=1024)

    [request] = server.received
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {OPENAI_KEY}"
    body = request.body
    assert body["model"] == "gpt-4.1" and "max_completion_tokens" not in body
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "shell",
                "description": SHELL.description,
                "parameters": SHELL.parameters,
            },
        }
    ]
    system, user, assistant, tool, after = body["messages"]
    assert system == {"role": "system", "content": "You operate etcd."}
    assert user == {"role": "user", "content": "etcd is unhealthy"}
    assert assistant["role"] == "assistant" and assistant["content"] == "Checking."
    [sent_call] = assistant["tool_calls"]
    assert sent_call["id"] == "toolu_01" and sent_call["type"] == "function"
    assert sent_call["function"]["name"] == "shell"
    assert json.loads(sent_call["function"]["arguments"]) == CALL.arguments
    assert tool == {
        "role": "tool",
        "tool_call_id": "toolu_01",
        "content": "exit code 1: member down",
    }
    assert after == {"role": "user", "content": "hurry"}


def test_openai_malformed_arguments_become_error_calls(
    server: FakeProvider, gpt: OpenAIModel
) -> None:
    server.queue(
        openai_completion(
            "Trying.",
            function_call("c1", "shell", '{"command": "ls"'),
            function_call("c2", "shell", '["ls"]'),
            function_call("c3", "shell", ""),
            function_call("c4", "kubectl", '{"command": "get pods"}'),
            finish_reason="tool_calls",
        )
    )
    c1, c2, c3, c4 = gpt.complete("s", [UserMessage("go")], [SHELL]).tool_calls
    assert c1.arguments == {} and c1.error is not None and "not valid JSON" in c1.error
    assert c2.arguments == {} and c2.error == "arguments must be a JSON object, got list"
    assert c3 == ToolCall("c3", "shell", {})
    assert c4 == ToolCall("c4", "kubectl", {"command": "get pods"})


def test_openai_without_tools_sends_none_and_maps_stop_reasons(
    server: FakeProvider, gpt: OpenAIModel
) -> None:
    server.queue(openai_completion("A one-line summary.", finish_reason="length"))
    turn = gpt.complete("", [UserMessage("summarise"), AssistantMessage(Turn(""))], [])
    assert turn == Turn("A one-line summary.", (), Usage(10, 5), "max_tokens")
    body = server.received[0].body
    assert "tools" not in body
    assert body["messages"] == [{"role": "user", "content": "summarise"}]


@pytest.mark.parametrize(
    "error",
    [openai_error(429, "requests", "Rate limit reached", "rate_limit_exceeded"),
     openai_error(500, "server_error", "The server had an error processing your request")],
)  # fmt: skip
def test_openai_rate_limits_and_server_errors_are_retried(
    server: FakeProvider, gpt: OpenAIModel, error: Reply
) -> None:
    server.queue(error, openai_completion("ok"))
    assert gpt.complete("s", [UserMessage("go")], []).text == "ok"
    assert len(server.received) == 2


def test_openai_server_error_that_persists_is_unavailable(
    server: FakeProvider, gpt: OpenAIModel
) -> None:
    server.always = openai_error(503, "server_error", "The engine is currently overloaded")
    with pytest.raises(ModelUnavailable) as caught:
        gpt.complete("s", [UserMessage("go")], [])
    assert str(caught.value) == (
        "openai gpt-4.1: HTTP 503 server_error: The engine is currently overloaded"
    )
    assert len(server.received) == 5


def test_openai_bad_key_is_rejected_and_never_shown(server: FakeProvider, gpt: OpenAIModel) -> None:
    message = f"Incorrect API key provided: {OPENAI_KEY}."
    server.always = openai_error(401, "invalid_request_error", message, "invalid_api_key")
    with pytest.raises(ModelRejected) as caught:
        gpt.complete("s", [UserMessage("go")], [])
    assert len(server.received) == 1
    assert "HTTP 401 invalid_api_key: Incorrect API key provided: ****" in str(caught.value)
    assert OPENAI_KEY not in str(caught.value) and OPENAI_KEY not in repr(gpt)


def test_openai_unknown_model_is_rejected(server: FakeProvider, gpt: OpenAIModel) -> None:
    server.always = openai_error(
        404, "invalid_request_error", "model does not exist", "model_not_found"
    )
    with pytest.raises(ModelRejected, match="HTTP 404 model_not_found"):
        gpt.complete("s", [UserMessage("go")], [])


def test_openai_connection_refused_is_unavailable() -> None:
    url = closed_port_url()
    model = OpenAIModel("openai:m@x", "m", "not-needed", base_url=f"{url}/v1", max_retries=1)
    try:
        with pytest.raises(ModelUnavailable, match=f"cannot connect to {url}/v1"):
            model.complete("s", [UserMessage("go")], [])
    finally:
        model.close()


# --- load_model ---


def test_spec_builds_each_provider(tmp_path: Path) -> None:
    keys = settings(
        tmp_path, anthropic_api_key=SecretStr(ANTHROPIC_KEY), openai_api_key=SecretStr(OPENAI_KEY)
    )
    with loaded("anthropic:claude-sonnet-4-5", keys) as claude:
        assert isinstance(claude, AnthropicModel) and claude.name == "claude-sonnet-4-5"
        assert claude.spec == "anthropic:claude-sonnet-4-5"
        assert claude.max_tokens == 16_000
        assert ANTHROPIC_KEY not in repr(claude)
    with loaded("openai:gpt-4.1", keys) as gpt:
        assert isinstance(gpt, OpenAIModel) and gpt.name == "gpt-4.1"
        assert OPENAI_KEY not in repr(gpt)

    script = tmp_path / "s.yaml"
    script.write_text("turns: [{text: hi}]")
    scripted = load_model(f"scripted:{script}", keys)
    assert isinstance(scripted, ScriptedModel) and scripted.name == "scripted"
    assert scripted.spec == f"scripted:{script}"


def test_spec_with_a_base_url_needs_no_openai_key(tmp_path: Path, server: FakeProvider) -> None:
    server.queue(openai_completion("hello from qwen", model="qwen2.5"))
    with loaded(f"openai:qwen2.5@{server.url}/v1", settings(tmp_path)) as model:
        assert model.name == "qwen2.5"
        assert model.complete("s", [UserMessage("hi")], []).text == "hello from qwen"
    assert server.received[0].body["model"] == "qwen2.5"
    assert server.received[0].headers["authorization"] == "Bearer not-needed"


def test_spec_uses_the_openai_base_url_setting(tmp_path: Path, server: FakeProvider) -> None:
    server.queue(openai_completion("via setting"))
    conf = settings(
        tmp_path, openai_api_key=SecretStr(OPENAI_KEY), openai_base_url=f"{server.url}/v1"
    )
    with loaded("openai:gpt-4.1", conf) as model:
        assert model.complete("s", [UserMessage("hi")], []).text == "via setting"
    assert server.received[0].headers["authorization"] == f"Bearer {OPENAI_KEY}"


def test_spec_with_a_base_url_reaches_anthropic_through_it(
    tmp_path: Path, server: FakeProvider
) -> None:
    server.queue(anthropic_message(text_block("via proxy")))
    conf = settings(tmp_path, anthropic_api_key=SecretStr(ANTHROPIC_KEY))
    with loaded(f"anthropic:{CLAUDE}@{server.url}", conf) as model:
        assert model.complete("s", [UserMessage("hi")], []).text == "via proxy"
    assert server.received[0].headers["authorization"] == f"Bearer {ANTHROPIC_KEY}"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "no model configured"),
        ("claude-sonnet-4-5", "names no known provider; start it with anthropic:, openai:"),
        ("gemini:pro", "'gemini:pro' names no known provider"),
        ("openai:", "is not openai:MODEL or openai:MODEL@http(s)://HOST/PATH"),
        ("openai:m@localhost:11434", "is not openai:MODEL or openai:MODEL@http(s)://HOST/PATH"),
        ("scripted:", "names no script file"),
        ("anthropic:claude-sonnet-4-5", "needs an Anthropic API key: set ANTHROPIC_API_KEY"),
        ("openai:gpt-4.1", "needs an OpenAI API key: set OPENAI_API_KEY"),
    ],
)
def test_spec_errors_say_what_to_fix(tmp_path: Path, spec: str, message: str) -> None:
    with pytest.raises(NoModel) as caught:
        load_model(spec, settings(tmp_path))
    assert message in str(caught.value)
    assert "ANTHROPIC_API_KEY" in caught.value.hint and "scripted:" in caught.value.hint


# --- scripted ---


def test_scripted_model_plays_a_yaml_script(tmp_path: Path) -> None:
    script = tmp_path / "s.yaml"
    script.write_text(
        """
turns:
  - text: Looking.
    shell:
      - {command: etcdctl endpoint health, reasoning: which member is down}
      - {command: uptime}
    usage: {input_tokens: 600, output_tokens: 100}
  - text: Fixed.
"""
    )
    model = ScriptedModel.from_file(script)
    first = model.complete("s", [UserMessage("go")], [SHELL])
    assert first == Turn(
        "Looking.",
        (
            ToolCall(
                "call-1-0",
                "shell",
                {"command": "etcdctl endpoint health", "reasoning": "which member is down"},
            ),
            ToolCall("call-1-1", "shell", {"command": "uptime", "reasoning": ""}),
        ),
        Usage(600, 100),
        "tool_use",
    )
    assert model.complete("s", [], []) == Turn("Fixed.", (), Usage(), "end_turn")
    assert model.complete("s", [], []) == Turn(EXHAUSTED)
    assert model.complete("s", [], []).tool_calls == ()


def test_scripted_model_plays_raw_bad_calls_from_json(tmp_path: Path) -> None:
    script = tmp_path / "s.json"
    turns = [
        {"text": "", "calls": [{"name": "shell", "arguments": "{not json"}]},
        {"calls": [{"name": "kubectl", "arguments": {"command": "get pods"}}]},
        {"text": ""},
        {
            "calls": [{"name": "shell", "arguments": '{"command": "ls"}'}],
            "shell": [{"command": "id"}],
        },
    ]
    script.write_text(json.dumps({"turns": turns}))
    model = ScriptedModel.from_file(script)

    [bad] = model.complete("s", [], []).tool_calls
    assert bad.name == "shell" and bad.arguments == {}
    assert bad.error is not None and "not valid JSON" in bad.error
    assert model.complete("s", [], []).tool_calls == (
        ToolCall("call-2-0", "kubectl", {"command": "get pods"}),
    )
    assert model.complete("s", [], []) == Turn("")
    mixed = model.complete("s", [], [])
    assert [c.id for c in mixed.tool_calls] == ["call-4-0", "call-4-1"]
    assert [c.arguments["command"] for c in mixed.tool_calls] == ["id", "ls"]


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("gone.yaml", None, "cannot read model script"),
        ("bad.yaml", "turns: [unclosed", "is not valid YAML"),
        ("bad.json", '{"turns": [', "is not valid JSON"),
        ("list.yaml", "- text: hi", "expected a mapping with a list of turns"),
        ("shell.yaml", "turns: [{shell: 3}]", "turns[0].shell: expected a list, got int"),
        ("cmd.yaml", "turns: [{text: a}, {shell: [{reasoning: r}]}]", "turns[1].shell: each entry"),
        ("key.yaml", "turns: [{txt: hi}]", "turns[0]: unknown key 'txt'"),
        ("call.yaml", "turns: [{calls: [{arguments: {}}]}]", "turns[0].calls: each entry needs"),
        ("usage.yaml", "turns: [{usage: {input_tokens: -1}}]", "turns[0].usage: token counts"),
    ],
)
def test_a_broken_script_says_what_is_wrong_and_where(
    tmp_path: Path, name: str, text: str | None, message: str
) -> None:
    path = tmp_path / name
    if text is not None:
        path.write_text(text)
    with pytest.raises(NoModel) as caught:
        load_model(f"scripted:{path}", settings(tmp_path))
    assert str(path) in str(caught.value)
    assert message in str(caught.value)
    assert '"turns"' in caught.value.hint


# --- prices ---


def test_cost_counts_every_kind_of_token() -> None:
    usage = Usage(input_tokens=1_000_000, output_tokens=100_000, cache_read_tokens=2_000_000,
                  cache_write_tokens=400_000)  # fmt: skip
    assert cost("claude-sonnet-4-5", usage) == pytest.approx(3.00 + 1.50 + 0.60 + 1.50)
    assert cost("claude-sonnet-4-5-20250929", usage) == cost("claude-sonnet-4-5", usage)
    assert cost("gpt-4.1", Usage(1_000_000, 1_000_000, 1_000_000)) == pytest.approx(2 + 8 + 0.5)


def test_snapshots_match_their_own_model_and_nothing_else_is_priced() -> None:
    assert price("gpt-4o-mini-2024-07-18") == price("gpt-4o-mini") != price("gpt-4o")
    assert price("claude-haiku-4-5-20251001") == price("claude-haiku-4-5")
    assert price("claude-sonnet-4-20250514") == price("claude-sonnet-4")
    for unknown in ("scripted", "qwen2.5", "gpt-4.1-nano", "claude-sonnet-4-7", "gpt-5.1"):
        assert price(unknown) is None
        assert cost(unknown, Usage(1000, 1000)) == 0.0
