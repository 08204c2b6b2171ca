"""The official OpenAI Python SDK on the rest of the OpenAI surface through a
running BluesMinds gateway: images, audio (its multipart uploads as the SDK
builds them) and moderations.

Run by tests/openai_surface.rs, which sets BM_BASE_URL and BM_API_KEY.
"""

import os

import openai
import pytest

BASE_URL = os.environ["BM_BASE_URL"]
API_KEY = os.environ["BM_API_KEY"]


@pytest.fixture
def client():
    return openai.OpenAI(base_url=BASE_URL, api_key=API_KEY, max_retries=0)


def speech_bytes(model, text):
    """What the fake upstream answers (fake_upstream::surface::speech_bytes)."""
    out = bytearray(b"\xff\xfb\x90\x64")
    for round_ in range(200):
        out += bytes((b + round_) % 256 for b in range(256))
        out += ('data: {"model":"%s","usage":{"prompt_tokens":9}}\n\n' % model).encode()
        out += text.encode()
    return bytes(out)


def test_images(client):
    r = client.images.generate(model="gpt-image-1", prompt="a whale in a teacup")
    assert r.data[0].b64_json
    assert r.usage.input_tokens == 5


def test_speech(client):
    r = client.audio.speech.create(model="tts-1", voice="alloy", input="hello there")
    assert r.response.headers["content-type"] == "audio/mpeg"
    assert r.content == speech_bytes("tts-1", "hello there")


def test_transcription_and_translation(client):
    audio = ("hello.mp3", b"\xff\xfb\x90\x64" + bytes(range(256)) * 20, "audio/mpeg")
    r = client.audio.transcriptions.create(model="gpt-4o-transcribe", file=audio)
    assert r.text == "Hello from the transcribed audio."
    r = client.audio.translations.create(model="whisper-1", file=audio)
    assert r.text == "Hello from the translated audio."


def test_moderations(client):
    r = client.moderations.create(model="omni-moderation-latest", input="I will kill it")
    assert r.results[0].flagged


def test_a_model_the_key_may_not_use(client):
    with pytest.raises(openai.NotFoundError):
        client.audio.transcriptions.create(model="whisper-large", file=("a.mp3", b"x"))
