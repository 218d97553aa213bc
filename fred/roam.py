#!/usr/bin/env python3
"""Walk one conversation across two DisCEdge-rs proxies, as a roaming client would.

By default turns 1-2 go to proxy A, 3-4 to B, 5-6 to A and 7-9 to B (the roaming pattern of the
DisCEdge paper's experiments). Each turn prints the node, the HTTP status, llama-server's token
counts (t_eval = tokens_evaluated, t_cach = tokens_cached from its reply; new = timings.prompt_n,
prompt tokens computed this turn; cache = timings.cache_n, prompt tokens taken from its prompt
cache), the seconds the turn took and the first words of the reply. Stops at the first answer that is not 200 and exits 1.

With --stream each turn is streamed ("stream": true) and `ttft` is the client's time to the
first event that carries text (time to first token); --pause S waits S seconds between turns
(a user reading the reply; it also gives the other node's warm-up time to run, see
`discedge serve --warm-up`). --json FILE writes every turn's figures.

Usage: fred/roam.py [--mode tokenized] [--a http://127.0.0.1:8081] [--b http://127.0.0.1:8082]
                    [--plan AABBAABBB] [--n-predict 32] [--user roamer] [--stream]
                    [--pause S] [--json FILE]
Only the Python standard library is needed.
"""
import argparse
import json
import sys
import time
import urllib.error
import urllib.request

MESSAGES = [
    "How can I learn matrix operations?",
    "Can you explain matrix multiplication in more detail?",
    "What is the identity matrix?",
    "How do I find the inverse of a 2x2 matrix?",
    "What is a determinant used for?",
    "Give me a small example of a transpose.",
    "What are eigenvalues, in one paragraph?",
    "Which programming library should I use for this?",
    "Summarise what we talked about.",
]


def post(url, body, timeout):
    data = json.dumps(body).encode()
    req = urllib.request.Request(
        url.rstrip("/") + "/completion", data=data, headers={"Content-Type": "application/json"}
    )
    start = time.monotonic()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, headers, raw = resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as err:
        status, headers, raw = err.code, err.headers, err.read()
    elapsed = time.monotonic() - start
    try:
        reply = json.loads(raw)
    except ValueError:
        reply = {"_raw": raw.decode(errors="replace")}
    return status, headers, reply, elapsed


def post_stream(url, body, timeout):
    """Streams a turn: (status, headers, reply, seconds, seconds to the first text). The reply
    is the last event (llama-server's timings and the session fields) with the whole text."""
    data = json.dumps(dict(body, stream=True)).encode()
    req = urllib.request.Request(
        url.rstrip("/") + "/completion", data=data, headers={"Content-Type": "application/json"}
    )
    start = time.monotonic()
    ttft, text, last = None, [], {}
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, headers = resp.status, resp.headers
            for line in resp:
                line = line.decode().strip()
                if not line.startswith("data:"):
                    continue
                event = json.loads(line[5:])
                if event.get("content"):
                    ttft = ttft if ttft is not None else time.monotonic() - start
                    text.append(event["content"])
                last = event
    except urllib.error.HTTPError as err:
        raw = err.read()
        try:
            reply = json.loads(raw)
        except ValueError:
            reply = {"_raw": raw.decode(errors="replace")}
        return err.code, err.headers, reply, time.monotonic() - start, None
    last["content"] = "".join(text)
    return status, headers, last, time.monotonic() - start, ttft


def first_words(text, n=8):
    words = " ".join(str(text).split()).split(" ")
    out = " ".join(words[:n])
    return out + (" ..." if len(words) > n else "")


def chatml(history, message):
    """The whole conversation as ChatML text, for client-side mode (the client keeps it)."""
    parts = [f"<|im_start|>{role}\n{text}<|im_end|>\n" for role, text in history]
    parts.append(f"<|im_start|>user\n{message}<|im_end|>\n<|im_start|>assistant\n")
    return "".join(parts)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", default="tokenized", help="raw, tokenized, truncate, client-side, ...")
    ap.add_argument("--a", default="http://127.0.0.1:8081", help="proxy A's base URL")
    ap.add_argument("--b", default="http://127.0.0.1:8082", help="proxy B's base URL")
    ap.add_argument("--plan", default="AABBAABBB", help="node per turn, e.g. AABBAABBB")
    ap.add_argument("--n-predict", type=int, default=32)
    ap.add_argument("--user", default="roamer")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--timeout", type=float, default=300, help="seconds per request")
    ap.add_argument("--stream", action="store_true", help="stream each turn and time its first token")
    ap.add_argument("--pause", type=float, default=0, help="seconds between turns")
    ap.add_argument("--json", help="write every turn's figures to this file")
    args = ap.parse_args()

    plan = args.plan.upper()
    if not plan or set(plan) - {"A", "B"}:
        ap.error("--plan is a string of A and B")
    urls = {"A": args.a, "B": args.b}
    messages = [MESSAGES[i % len(MESSAGES)] for i in range(len(plan))]

    print(f"mode {args.mode}: {len(plan)} turns, plan {plan}  (A = {args.a}, B = {args.b})")
    # tokens_evaluated / tokens_cached: llama-server's reply fields; prompt_n / cache_n: its
    # timings (prompt tokens computed now / taken from its prompt cache).
    print(f"{'turn':>4} {'node':>4} {'status':>6} {'t_eval':>6} {'t_cach':>6} {'new':>5} {'cache':>5} {'secs':>6} {'ttft':>6}  reply")
    rows = []
    session_id = None
    history = []
    for turn, (node, message) in enumerate(zip(plan, messages), start=1):
        body = {
            "mode": args.mode,
            "user_id": args.user,
            "turn": turn,
            "prompt": chatml(history, message) if args.mode == "client-side" else message,
            "n_predict": args.n_predict,
            "temperature": 0,
            "seed": args.seed,
        }
        if session_id:
            body["session_id"] = session_id
        if turn > 1 and args.pause:
            time.sleep(args.pause)
        try:
            if args.stream:
                status, headers, reply, secs, ttft = post_stream(urls[node], body, args.timeout)
            else:
                (status, headers, reply, secs), ttft = post(urls[node], body, args.timeout), None
        except (urllib.error.URLError, OSError) as err:
            print(f"{turn:>4} {node:>4}  error  cannot reach {urls[node]}: {err}")
            return 1
        if status != 200:
            print(f"{turn:>4} {node:>4} {status:>6}  {json.dumps(reply)[:300]}")
            return 1
        session_id = session_id or reply.get("session_id")
        timings = reply.get("timings") or {}
        content = reply.get("content", "")
        replayed = " (replayed)" if headers.get("x-discedge-replayed") == "true" else ""
        print(
            f"{turn:>4} {node:>4} {status:>6} {reply.get('tokens_evaluated', '-'):>6} "
            f"{reply.get('tokens_cached', '-'):>6} {timings.get('prompt_n', '-'):>5} "
            f"{timings.get('cache_n', '-'):>5} {secs:>6.2f} "
            f"{'-' if ttft is None else format(ttft, '.3f'):>6}  "
            f"{first_words(content)}{replayed}"
        )
        rows.append({
            "turn": turn, "node": node, "evaluated": timings.get("prompt_n"),
            "cached": timings.get("cache_n"), "prompt_ms": timings.get("prompt_ms"),
            "secs": secs, "ttft": ttft,
        })
        history += [("user", message), ("assistant", content)]
    print(f"session {session_id}: all {len(plan)} turns answered 200")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"mode": args.mode, "plan": plan, "session_id": session_id, "turns": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
