"""The official OpenAI Python SDK against a running BluesMinds gateway.

Run by tests/openai_sdk.rs, which starts the gateway and a fake upstream and sets
BM_BASE_URL (e.g. http://127.0.0.1:8080/v1) and BM_API_KEY.
"""

import os

import openai
import pytest

BASE_URL = os.environ["BM_BASE_URL"]
API_KEY = os.environ["BM_API_KEY"]


@pytest.fixture
def client():
    return openai.OpenAI(base_url=BASE_URL, api_key=API_KEY, max_retries=0)


def test_chat(client):
    r = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "Say hello to the tests"}],
    )
    assert r.choices[0].message.content == "Hello from the fake upstream"
    assert r.usage.prompt_tokens == 8
    assert r.usage.completion_tokens == 5


def test_streaming_chat(client):
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "Say hello to the tests"}],
        stream=True,
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from the fake upstream"
    # The gateway asked the upstream for usage itself; this client did not, so
    # it must not receive the usage-only chunk.
    assert all(c.choices for c in chunks)


def test_streaming_chat_with_usage(client):
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "Say hello to the tests"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == 5


def test_embeddings(client):
    # The SDK asks for base64 by default and decodes it.
    r = client.embeddings.create(model="text-embedding-3-small", input=["one two", "three"])
    assert len(r.data) == 2
    assert len(r.data[0].embedding) == 8
    assert r.usage.prompt_tokens == 3


def test_models(client):
    ids = [m.id for m in client.models.list()]
    assert "gpt-4o-mini" in ids
    assert client.models.retrieve("gpt-4o-mini").id == "gpt-4o-mini"


def test_wrong_key_is_an_authentication_error():
    bad = openai.OpenAI(base_url=BASE_URL, api_key="bm_" + "x" * 43, max_retries=0)
    with pytest.raises(openai.AuthenticationError) as e:
        bad.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
    assert e.value.status_code == 401
    assert e.value.code == "invalid_api_key"


def test_unknown_model_is_not_found(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "hi"}]
        )
    assert e.value.code == "model_not_found"


def test_bad_request(client):
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="", messages=[])
