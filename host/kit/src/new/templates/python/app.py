"""{{name}}: a DisCEdge context policy in Python.

It keeps the conversation as text and sends the model the system prompt and the last KEEP
turns. Each committed turn stores one record, the JSON of that turn:
{"system": ... (turn 1 only), "user": ..., "assistant": ...}.

The contract is wit/policy.wit (world `context-policy`). Build with `make`, check with
`make test`.
"""

import json
from typing import List, Optional

from componentize_py_types import Err
from wit_world.imports.types import (
    Answer,
    ChatTemplate,
    PolicyError_Internal,
    PolicyInfo,
    Prepared,
    Prompt_Text,
    Reply,
    Settings,
    Step_Ready,
    TurnInput,
)
from wit_world import exports

# How many past turns the prompt keeps.
KEEP = 8


def render(template: ChatTemplate, role: str, content: str) -> str:
    """One message framed by the operator's chat template."""
    return template.message_prefix.replace("{role}", role) + content + template.message_suffix


def read_record(index: int, record: bytes) -> dict:
    """A stored turn; an unreadable one is the policy's error, never a crash."""
    try:
        turn = json.loads(record.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise Err(PolicyError_Internal(f"record {index} is not this policy's JSON: {e}"))
    if not isinstance(turn, dict) or not isinstance(turn.get("user"), str) \
            or not isinstance(turn.get("assistant"), str):
        raise Err(PolicyError_Internal(f"record {index} lacks user/assistant text"))
    return turn


class Policy(exports.Policy):
    def info(self) -> PolicyInfo:
        return PolicyInfo(
            version="0.1.0",
            description=f"{{name}}: the system prompt and the last {KEEP} turns, as text",
            stores_context=True,
        )

    def prepare(self, records: List[bytes], input: TurnInput, settings: Settings,
                answers: List[Answer]) -> Step_Ready:
        # `answers` holds the completions this turn asked for (return Step_Complete(...) to
        # ask one, e.g. for a summary); this policy never asks, so it is always empty.
        template = settings.template
        turns = [read_record(i, r) for i, r in enumerate(records)]
        system = settings.system_prompt if not turns else turns[0].get("system")
        text = template.bos
        if isinstance(system, str) and system:
            text += render(template, "system", system)
        dropped = max(0, len(turns) - KEEP)
        for turn in turns[dropped:]:
            text += render(template, "user", turn["user"])
            text += render(template, "assistant", turn["assistant"])
        text += render(template, "user", input.prompt)
        text += template.message_prefix.replace("{role}", "assistant")
        # The carry tells commit what to store besides the reply.
        carry = {"user": input.prompt}
        if not turns and settings.system_prompt:
            carry["system"] = settings.system_prompt
        return Step_Ready(Prepared(
            prompt=Prompt_Text(text),
            want_reply_tokens=False,
            carry=json.dumps(carry, sort_keys=True).encode("utf-8"),
            dropped_records=dropped,
        ))

    def commit(self, input: TurnInput, settings: Settings, carry: bytes, reply: Reply) -> Optional[bytes]:
        turn = json.loads(carry.decode("utf-8"))
        turn["assistant"] = reply.content
        return json.dumps(turn, sort_keys=True).encode("utf-8")
