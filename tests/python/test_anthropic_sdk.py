"""The official Anthropic Python SDK against a running BluesMinds gateway.

Run by tests/anthropic_sdk.rs twice: in front of an Anthropic-speaking fake
(bytes pass through) and in front of an OpenAI-speaking fake (the gateway
translates). It sets:

  BM_BASE_URL      the gateway's root (the SDK adds /v1/messages)
  BM_API_KEY       a key; BM_LIMITED_KEY a key allowed 1 request a minute
  BM_MODEL         the model the pool serves
  BM_CACHE_READ    prompt tokens the upstream reports read from its cache
  BM_CACHE_WRITE   ... and written to it
  BM_COUNT_TOKENS  what count_tokens must answer for PROMPT
  BM_UPSTREAM_URL  the fake's root, for its /_control/mode knob
"""

import os

import json
import urllib.request

import anthropic
import pytest

BASE_URL = os.environ["BM_BASE_URL"]
API_KEY = os.environ["BM_API_KEY"]
MODEL = os.environ["BM_MODEL"]
CACHE_READ = int(os.environ["BM_CACHE_READ"])
CACHE_WRITE = int(os.environ["BM_CACHE_WRITE"])
REPLY = "Hello from the fake upstream"
PROMPT = [{"role": "user", "content": "Say hello to the tests"}]
# Both fakes count 5 words + 3 for the message.
PROMPT_TOKENS = 8
WEATHER = {
    "name": "get_weather",
    "description": "Current weather for a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


@pytest.fixture
def client():
    return anthropic.Anthropic(base_url=BASE_URL, api_key=API_KEY, max_retries=0)


def assert_usage(usage, output_tokens):
    # Anthropic's input_tokens exclude the cached ones; the three add up.
    assert usage.cache_read_input_tokens == CACHE_READ
    assert (usage.cache_creation_input_tokens or 0) == CACHE_WRITE
    total = usage.input_tokens + CACHE_READ + CACHE_WRITE
    assert total == PROMPT_TOKENS, usage
    assert usage.output_tokens == output_tokens


def test_create(client):
    r = client.messages.create(model=MODEL, max_tokens=100, messages=PROMPT)
    assert r.type == "message" and r.role == "assistant"
    assert r.id.startswith("msg_")
    assert r.model == MODEL
    assert [b.type for b in r.content] == ["text"]
    assert r.content[0].text == REPLY
    assert r.stop_reason == "end_turn"
    assert_usage(r.usage, 5)
    assert r._request_id


def test_stream(client):
    with client.messages.stream(model=MODEL, max_tokens=100, messages=PROMPT) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == REPLY
    assert final.content[0].text == REPLY
    assert final.stop_reason == "end_turn"
    assert_usage(final.usage, 5)


def test_max_tokens_cuts_the_answer(client):
    r = client.messages.create(model=MODEL, max_tokens=2, messages=PROMPT)
    assert r.stop_reason == "max_tokens"
    assert r.content[0].text == "Hello from "
    assert r.usage.output_tokens == 2


def test_tool_use_round_trip(client):
    ask = [{"role": "user", "content": "What is the weather? Use get_weather for Paris."}]
    with client.messages.stream(
        model=MODEL, max_tokens=100, tools=[WEATHER], messages=ask
    ) as s:
        first = s.get_final_message()
    assert first.stop_reason == "tool_use"
    calls = [b for b in first.content if b.type == "tool_use"]
    assert len(calls) == 1
    call = calls[0]
    assert call.name == "get_weather"
    assert call.input == {"city": "fake-city"}
    assert call.id

    history = ask + [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "18 degrees and sunny"}],
        },
    ]
    second = client.messages.create(model=MODEL, max_tokens=100, tools=[WEATHER], messages=history)
    assert second.stop_reason == "end_turn"
    assert second.content[0].text == REPLY


def test_count_tokens(client):
    r = client.messages.count_tokens(model=MODEL, messages=PROMPT)
    assert r.input_tokens == int(os.environ["BM_COUNT_TOKENS"])


def test_wrong_key_is_an_authentication_error():
    bad = anthropic.Anthropic(base_url=BASE_URL, api_key="bm_" + "x" * 43, max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as e:
        bad.messages.create(model=MODEL, max_tokens=10, messages=PROMPT)
    assert e.value.status_code == 401
    assert e.value.body["error"]["type"] == "authentication_error"


def test_bearer_token_works_too():
    # Claude Code's ANTHROPIC_AUTH_TOKEN sends the key as a bearer token.
    bearer = anthropic.Anthropic(base_url=BASE_URL, auth_token=API_KEY, max_retries=0)
    r = bearer.messages.create(model=MODEL, max_tokens=100, messages=PROMPT)
    assert r.content[0].text == REPLY


def test_unknown_model_is_not_found(client):
    with pytest.raises(anthropic.NotFoundError) as e:
        client.messages.create(model="no-such-model", max_tokens=10, messages=PROMPT)
    assert e.value.body["error"]["type"] == "not_found_error"


def test_bad_request(client):
    with pytest.raises(anthropic.BadRequestError) as e:
        client.messages.create(model=MODEL, max_tokens=10, messages=[])
    assert e.value.body["error"]["type"] == "invalid_request_error"


def test_rate_limit_is_a_rate_limit_error():
    limited = anthropic.Anthropic(
        base_url=BASE_URL, api_key=os.environ["BM_LIMITED_KEY"], max_retries=0
    )
    limited.messages.create(model=MODEL, max_tokens=100, messages=PROMPT)
    with pytest.raises(anthropic.RateLimitError) as e:
        limited.messages.create(model=MODEL, max_tokens=100, messages=PROMPT)
    assert e.value.body["error"]["type"] == "rate_limit_error"
    assert int(e.value.response.headers["retry-after"]) >= 1


def set_upstream_mode(mode):
    req = urllib.request.Request(
        os.environ["BM_UPSTREAM_URL"] + "/_control/mode",
        data=json.dumps(mode).encode(),
        headers={"content-type": "application/json"},
    )
    urllib.request.urlopen(req).read()


def test_a_cut_stream_is_never_taken_as_complete(client):
    set_upstream_mode({"mode": "die_mid_stream", "after_chunks": 2})
    try:
        seen = []
        with pytest.raises(Exception) as e:
            with client.messages.stream(model=MODEL, max_tokens=100, messages=PROMPT) as s:
                for text in s.text_stream:
                    seen.append(text)
                s.get_final_message()
        assert "".join(seen) == "Hello from ", e.value
    finally:
        set_upstream_mode({"mode": "normal"})
