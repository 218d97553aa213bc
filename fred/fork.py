#!/usr/bin/env python3
"""Fork a conversation across two or three DisCEdge-rs proxies and check that no session gets
stuck and no acknowledged turn is lost (the fork scenario of the FReD-path issue).

For each of N sessions: turn 1 on proxy A; then the same turn 2, with different prompts, sent
to every proxy (A, B, and C if given) at the same moment; then, after SETTLE seconds, turn 3 on each node in turn (the
node whose racer lost first), retried while the answer is 409 with the turn to send. Finally
both nodes' views of the session (GET /sessions/{id}) must show the same history, and the
turn-2 prompt in it must be the one whose racer got 200.

Prints one line per session and a summary; exits 1 if any session is stuck (a 5xx after
settling, or no 200 within the retries), diverged, or lost an acknowledged turn.

Usage: fred/fork.py [--a URL] [--b URL] [--c URL] [--sessions 12] [--mode raw] [--settle 0.5]
Only the Python standard library is needed.
"""
import argparse
import json
import sys
import threading
import time
import urllib.error
import urllib.request


def call(method, url, body=None, timeout=60):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as err:
        raw = err.read()
        try:
            return err.code, json.loads(raw)
        except ValueError:
            return err.code, {"_raw": raw.decode(errors="replace")}


def turn(base, body):
    return call("POST", base.rstrip("/") + "/completion", body)


def history(base, session_id, user):
    status, view = call("GET", f"{base.rstrip('/')}/sessions/{session_id}?user_id={user}")
    if status != 200:
        return status, None
    return status, [m.get("content", "") for m in view.get("history") or [] if m.get("role") == "user"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--a", default="http://127.0.0.1:8081")
    ap.add_argument("--b", default="http://127.0.0.1:8082")
    ap.add_argument("--c", help="a third proxy: the turn then races on three nodes")
    ap.add_argument("--sessions", type=int, default=int(__import__("os").environ.get("FORK_SESSIONS", "12")))
    ap.add_argument("--mode", default="raw")
    ap.add_argument("--user", default="forker")
    ap.add_argument("--settle", type=float, default=0.5)
    ap.add_argument("--n-predict", type=int, default=8)
    args = ap.parse_args()
    nodes = {"A": args.a, "B": args.b}
    if args.c:
        nodes["C"] = args.c
    common = {"mode": args.mode, "user_id": args.user, "n_predict": args.n_predict,
              "temperature": 0, "seed": 1}
    bad = 0
    tally = {**{n: 0 for n in nodes}, "several": 0, "none": 0}
    for i in range(args.sessions):
        status, reply = turn(nodes["A"], {**common, "prompt": f"Hello number {i}.", "turn": 1})
        if status != 200:
            print(f"session {i}: turn 1 answered {status} {reply}")
            bad += 1
            continue
        sid = reply["session_id"]
        topics = {"A": "apples", "B": "boats", "C": "cars"}
        prompts = {n: f"Tell me about {topics[n]}, {i}." for n in nodes}
        results = {}
        barrier = threading.Barrier(len(nodes))

        def race(name):
            barrier.wait()
            results[name] = turn(nodes[name], {**common, "session_id": sid, "turn": 2,
                                               "prompt": prompts[name]})

        threads = [threading.Thread(target=race, args=(n,)) for n in nodes]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        winners = [n for n in nodes if results[n][0] == 200]
        key = winners[0] if len(winners) == 1 else ("several" if winners else "none")
        tally[key] += 1
        time.sleep(args.settle)
        problems = []
        next_turn = 3
        order = [n for n in nodes if n not in winners] + winners
        for name in order:
            for _attempt in range(3):
                status, reply = turn(nodes[name], {**common, "session_id": sid, "turn": next_turn,
                                                   "prompt": f"And then, on {name}?"})
                if status == 200:
                    next_turn += 1
                    break
                expected = (reply.get("error") or {}).get("expected_turn")
                if status == 409 and isinstance(expected, int):
                    next_turn = expected
                    continue
                time.sleep(0.3)
            else:
                problems.append(f"stuck on {name}: {status} {json.dumps(reply)[:160]}")
        views = {n: history(nodes[n], sid, args.user) for n in nodes}
        if any(views[n] != views["A"] for n in nodes):
            problems.append(f"nodes disagree: {views}")
        _, users = views["A"]
        if users is None:
            problems.append(f"no history on A: {views['A'][0]}")
        else:
            for name in winners:
                if len(users) < 2 or users[1].strip() != prompts[name]:
                    problems.append(f"{name}'s acknowledged turn 2 is not in the history: {users[:3]}")
        codes = " ".join(f"{n}={results[n][0]}" for n in nodes)
        print(f"session {i} {sid}: turn 2 {codes}; turns after: {next_turn - 3}; "
              + ("OK" if not problems else "; ".join(problems)))
        bad += bool(problems)
    won = ", ".join(f"{n} {tally[n]}" for n in nodes)
    print(f"{args.sessions} sessions on {len(nodes)} nodes, mode {args.mode}: turn-2 winner {won}, "
          f"several {tally['several']}, none {tally['none']}; {bad} with problems")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
