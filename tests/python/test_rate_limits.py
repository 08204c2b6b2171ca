"""How the official OpenAI Python SDK sees the gateway's rate limits.

Run by tests/openai_sdk.rs with BM_BASE_URL and BM_API_KEY, a key limited to
30 requests per minute (one request back every 2 s).
"""

import os

import openai
import pytest

BASE_URL = os.environ["BM_BASE_URL"]
API_KEY = os.environ["BM_API_KEY"]
MESSAGES = [{"role": "user", "content": "Say hello to the tests"}]


def test_429_is_rate_limit_error_and_retry_after_is_honoured():
    no_retry = openai.OpenAI(base_url=BASE_URL, api_key=API_KEY, max_retries=0)
    for _ in range(30):
        no_retry.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    with pytest.raises(openai.RateLimitError) as e:
        no_retry.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert e.value.status_code == 429
    assert e.value.code == "rate_limit_exceeded"
    headers = e.value.response.headers
    assert headers["x-ratelimit-limit-requests"] == "30"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert 1 <= int(headers["retry-after"]) <= 2

    # One retry is enough only if the SDK waits as long as retry-after says:
    # its own first backoff (at most 0.5 s) is too short for the bucket to refill.
    one_retry = openai.OpenAI(base_url=BASE_URL, api_key=API_KEY, max_retries=1)
    raw = one_retry.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MESSAGES
    )
    assert raw.retries_taken == 1
    assert raw.parse().choices[0].message.content == "Hello from the fake upstream"
