"""The official OpenAI Python SDK against the gateway over HTTPS.

Run by tests/tls.rs, which starts the gateway with `server.tls` (a certificate
signed by a CA made for the test) and sets BM_BASE_URL (https://.../v1),
BM_API_KEY and BM_CA_FILE (that CA, PEM).
"""

import os
import ssl

import openai
import pytest

BASE_URL = os.environ["BM_BASE_URL"]
API_KEY = os.environ["BM_API_KEY"]
CA_FILE = os.environ["BM_CA_FILE"]
MESSAGES = [{"role": "user", "content": "Say hello to the tests"}]


@pytest.fixture
def client():
    trust = ssl.create_default_context(cafile=CA_FILE)
    return openai.OpenAI(
        base_url=BASE_URL,
        api_key=API_KEY,
        max_retries=0,
        http_client=openai.DefaultHttpxClient(verify=trust),
    )


def test_the_base_url_is_https():
    assert BASE_URL.startswith("https://")


def test_chat(client):
    r = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert r.choices[0].message.content == "Hello from the fake upstream"
    assert r.usage.completion_tokens == 5


def test_streaming_chat(client):
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from the fake upstream"
    assert chunks[-1].usage.completion_tokens == 5


def test_a_client_that_does_not_trust_the_ca_refuses_the_gateway():
    # The SDK's own trust store (certifi) does not hold the test CA: the
    # certificate is really checked, not accepted blindly.
    plain = openai.OpenAI(base_url=BASE_URL, api_key=API_KEY, max_retries=0)
    with pytest.raises(openai.APIConnectionError):
        plain.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
