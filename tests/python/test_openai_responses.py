"""The official openai SDK's Responses API (`client.responses`) through the gateway.

Driven by tests/openai_responses.rs, once against a backend that serves
/v1/responses itself (passthrough) and once against a chat-only backend (the
gateway translates). Every answer's usage is appended to BM_USAGE_OUT (one JSON
line per request, in order, `null` for a refused one) so the Rust side can
compare it with the usage rows.
"""

import json
import os

import openai
import pytest
from openai import OpenAI

BASE_URL = os.environ["BM_BASE_URL"]
API_KEY = os.environ["BM_API_KEY"]
USAGE_OUT = os.environ["BM_USAGE_OUT"]
MODEL = "gpt-4o-mini"
# The fake's reply (tests/fake-upstream: the default reply in 5 chunks).
REPLY = "Hello from the fake upstream"

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
}


@pytest.fixture
def client():
    return OpenAI(base_url=BASE_URL, api_key=API_KEY, max_retries=0)


def record(usage):
    with open(USAGE_OUT, "a") as f:
        if usage is None:
            f.write("null\n")
        else:
            f.write(
                json.dumps(
                    {
                        "input_tokens": usage.input_tokens,
                        "output_tokens": usage.output_tokens,
                        "cached_tokens": usage.input_tokens_details.cached_tokens,
                        "reasoning_tokens": usage.output_tokens_details.reasoning_tokens,
                        "total_tokens": usage.total_tokens,
                    }
                )
                + "\n"
            )


def test_create(client):
    r = client.responses.create(model=MODEL, instructions="Be brief.", input="Say hello please")
    record(r.usage)
    assert r.object == "response"
    assert r.id.startswith("resp_")
    assert r.status == "completed"
    assert r.output_text == REPLY
    assert r.usage.input_tokens > 0
    assert r.usage.output_tokens > 0
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens


def test_create_stream(client):
    events = list(client.responses.create(model=MODEL, input="Say hello please", stream=True))
    types = [e.type for e in events]
    assert types[0] == "response.created"
    assert types[1] == "response.in_progress"
    assert types[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == REPLY
    assert types.count("response.output_text.delta") == 5
    done = [e for e in events if e.type == "response.output_text.done"]
    assert [d.text for d in done] == [REPLY]
    final = events[-1].response
    record(final.usage)
    assert final.status == "completed"
    assert final.output_text == REPLY
    assert final.usage.output_tokens > 0


def test_stream_helper(client):
    # The SDK's accumulator checks the event order (items added before their
    # deltas, parts before text) while it builds the final response.
    with client.responses.stream(model=MODEL, input="Say hello please") as stream:
        text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        final = stream.get_final_response()
    record(final.usage)
    assert text == REPLY
    assert final.output_text == REPLY


def test_incomplete_at_max_output_tokens(client):
    r = client.responses.create(model=MODEL, input="Say hello please", max_output_tokens=2)
    record(r.usage)
    assert r.status == "incomplete"
    assert r.incomplete_details.reason == "max_output_tokens"
    assert r.output_text == "Hello from "


def test_function_call_round_trip(client):
    question = {"role": "user", "content": "What is the weather in Paris? Use get_weather."}
    r = client.responses.create(model=MODEL, input=[question], tools=[WEATHER])
    record(r.usage)
    calls = [o for o in r.output if o.type == "function_call"]
    assert len(calls) == 1
    call = calls[0]
    assert call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": "fake-city"}
    assert call.call_id
    # The answer's items go back as input, with the function's output.
    r2 = client.responses.create(
        model=MODEL,
        input=[question, *r.output, {"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21 C"}],
        tools=[WEATHER],
    )
    record(r2.usage)
    assert r2.status == "completed"
    assert r2.output_text == REPLY


def test_function_call_streamed(client):
    events = list(
        client.responses.create(
            model=MODEL, input="Call get_weather for Paris", tools=[WEATHER], stream=True
        )
    )
    record(events[-1].response.usage)
    args = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    done = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert len(done) == 1
    assert done[0].arguments == args == '{"city":"fake-city"}'
    items = [e.item for e in events if e.type == "response.output_item.done" and e.item.type == "function_call"]
    assert items[0].name == "get_weather"
    assert items[0].arguments == args


def test_previous_response_id_refused(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model=MODEL, input="And then?", previous_response_id="resp_unknown123")
    record(None)
    assert e.value.status_code == 400
    assert e.value.param == "previous_response_id"
    assert "previous_response_id" in e.value.message or "Previous response" in e.value.message
