"""A three-turn session through the proxy with OpenAI's own Python client (PyPI `openai`).

Usage: python3 openai_session.py PROXY_URL [MODE]
Turn 1 sends a system and a user message; turns 2 and 3 send only the new user message, with
the session fields as extra body fields; turn 2 is streamed. Prints one JSON line per turn and
exits non-zero if anything the client received is not what the proxy promises.
"""
import json
import sys

import openai

url, mode = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else "tokenized")
client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=120)
common = dict(model="smollm2", max_tokens=24, temperature=0, seed=42)


def extra(obj, key):
    return (obj.model_extra or {}).get(key)


# Turn 1: a new session; the proxy names it.
one = client.chat.completions.create(
    messages=[
        {"role": "system", "content": "You are a helpful assistant. Answer briefly."},
        {"role": "user", "content": "What is the capital of France?"},
    ],
    extra_body={"mode": mode, "user_id": "alice"},
    **common,
)
session = extra(one, "session_id")
assert session, "turn 1 reply names the session"
assert extra(one, "turn") == 1 and extra(one, "mode") == mode
assert one.object == "chat.completion" and one.choices[0].message.role == "assistant"
assert one.usage.completion_tokens > 0
print(json.dumps({"turn": 1, "session_id": session, "content": one.choices[0].message.content,
                  "finish_reason": one.choices[0].finish_reason, "usage": one.usage.model_dump()}))

# Turn 2, streamed: only the new message; the session holds the rest.
chunks = list(client.chat.completions.create(
    messages=[{"role": "user", "content": "And what is its most famous tower?"}],
    extra_body={"mode": mode, "user_id": "alice", "session_id": session, "turn": 2},
    stream=True,
    stream_options={"include_usage": True},
    **common,
))
assert extra(chunks[0], "session_id") == session and extra(chunks[0], "turn") == 2
assert extra(chunks[-1], "session_id") == session
content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
assert content, "streamed content"
assert chunks[-1].choices[0].finish_reason in ("stop", "length")
print(json.dumps({"turn": 2, "stream_chunks": len(chunks), "content": content,
                  "finish_reason": chunks[-1].choices[0].finish_reason,
                  "usage": chunks[-1].usage.model_dump() if chunks[-1].usage else None}))

# Turn 3.
three = client.chat.completions.create(
    messages=[{"role": "user", "content": "How tall is it?"}],
    extra_body={"mode": mode, "user_id": "alice", "session_id": session, "turn": 3},
    **common,
)
assert extra(three, "turn") == 3
# The model saw the whole conversation: turn 3's prompt is longer than turn 2's would be alone.
assert three.usage.prompt_tokens > one.usage.prompt_tokens
print(json.dumps({"turn": 3, "content": three.choices[0].message.content,
                  "usage": three.usage.model_dump()}))

# A client that cannot send extra fields names the mode as its model (listed by /v1/models).
models = [m.id for m in client.models.list()]
assert mode in models, models
plain = client.chat.completions.create(
    model="client-side", messages=[{"role": "user", "content": "Say hello."}], max_tokens=8)
assert extra(plain, "mode") == "client-side" and plain.choices[0].message.content is not None

# A turn out of order: the client raises the proxy's 409 with its error body.
try:
    client.chat.completions.create(
        messages=[{"role": "user", "content": "again"}],
        extra_body={"mode": mode, "user_id": "alice", "session_id": session, "turn": 9},
        **common,
    )
    raise AssertionError("turn 9 was accepted")
except openai.ConflictError as e:
    assert e.body["code"] == "turn_mismatch" and e.body["expected_turn"] == 4, e.body
    print(json.dumps({"turn": 9, "error": e.body}))
