#!/usr/bin/env python3
"""Sync traffic: the bytes two FReD nodes exchange while conversations run on proxy A.

Method. The kernel keeps per-connection counters for every TCP socket (`ss -tinpe`:
bytes_sent, bytes_retrans, bytes_received; ino = the socket's inode). The processes of a running
test bed (fred/run-testbed.sh) are found by the ports they listen on (`ss -ltnp`): nodeA = the
frednode listening on 5555, nodeB on 5556, proxy A on 8081, proxy B on 8082. A connection is
put to the pair of processes that own its two ends (both ends are on this machine), and is
counted once, on the socket of the first process in the order nodeA, nodeB, proxyA, proxyB:
X->Y = that socket's bytes_sent - bytes_retrans, Y->X = its bytes_received. These are TCP payload
bytes, so TLS records, HTTP/2 framing and gRPC are included; TCP/IP headers are not (each segment
adds 52 B on loopback; the JSON output keeps the segment counts).

A background thread reads all counters every --poll-ms (default 50) while the conversations
run, keyed by socket inode, so connections opened during a conversation count from 0 (their
TCP+TLS set-up included) and a connection that closes loses at most its last --poll-ms (closed
connections are counted and reported). Before a conversation and after each of its turns the
script waits until the counters stand still (no change for --settle-ms, default 150), then
takes the reading: per-turn bytes are differences of these readings.

What is reported, per conversation (one session, every turn on proxy A, a fresh user id each):
  peering  nodeA <-> nodeB over their peering ports (FReD's relay): A->B, B->A, total;
  confirm  proxy A <-> nodeB's client API (the proxy's read-back on the other replica,
           --fred-confirm replicas): also crosses between machines in a real deployment,
           but is not peering traffic;
  feed     nodeA -> proxy A and nodeB -> proxy B on the trigger ports (run-testbed.sh --feed);
           local to a machine;
  local    (JSON only) each proxy <-> its own node's client API;
  other    any other pair's traffic among the four processes (none expected).
The conversations: a warm-up of --warmup turns (default 2, not in the table), then for each
mode (--modes raw,tokenized) one conversation of each length (--turns 9,30), then one
--flat-turns (50) conversation per --flat-modes (tokenized) whose per-turn bytes are listed.
Prompts are fred/roam.py's nine MESSAGES, repeated. Figures are compared with the original
DisCEdge's (FReD v0.2.19, 20-word reply) and with the previous version of this proxy.

The reply: host/lab/examples/fake_llama.rs answers every turn with a fixed 6-word, 31-byte reply
("This is the fake model's reply."). `sync-bytes.py fake-llama --port 18101` serves the same
FAKE llama-server protocol (host/lab/src/fake_llm.rs: /props, /v1/models, /tokenize, /detokenize,
/completion; the one-token-per-byte tokenizer with <|...|> control tokens above 255) with a
fixed 20-word reply (--reply to change it): start a bed with --llama-url http://127.0.0.1:18101.
The tokenizer is FAKE: one token per byte, so a tokenized turn carries ~4x the ids a real
tokenizer would give for English.

Usage:
  fred/sync-bytes.py [measure] [--a URL] [--b URL] [--modes raw,tokenized] [--turns 9,30]
                     [--flat-turns 50] [--flat-modes tokenized] [--json FILE] [--label TEXT]
  fred/sync-bytes.py fake-llama [--port 18101] [--reply TEXT]
Needs: ss (iproute2) with permission to see other processes' sockets (-p: root, or the same
user as the bed), the bed's processes on this machine, no --wan-ms (a delay-relay between the
nodes would own the peering sockets). Only the Python standard library is needed.
"""
import argparse
import http.client
import http.server
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from roam import MESSAGES  # noqa: E402  (the same prompts as the roaming walk)

# Bytes per conversation published for the original DisCEdge (FReD v0.2.19, 20-word reply) and
# measured for the previous version of this proxy, (mode, turns) -> bytes.
ORIGINAL = {("raw", 9): 13790, ("tokenized", 9): 12716, ("raw", 30): 130230, ("tokenized", 30): 118488}
PREVIOUS = {("raw", 9): 11564, ("tokenized", 9): 9921, ("raw", 30): 37474, ("tokenized", 30): 32357}
TARGET = {9: 0.50, 30: 0.15}  # at most this share of the original's bytes

ROLES = ["nodeA", "nodeB", "proxyA", "proxyB"]

# ------------------------------------------------------------------------------------------
# the kernel's counters


def ss(*args):
    out = subprocess.run(["ss", *args], capture_output=True, text=True, check=True).stdout
    return out.splitlines()


def listeners():
    """port -> set of pids listening on it (TCP)."""
    ports = {}
    for line in ss("-ltnpH"):
        parts = line.split()
        if len(parts) < 5:
            continue
        port = int(parts[3].rsplit(":", 1)[1])
        ports.setdefault(port, set()).update(int(p) for p in re.findall(r"pid=(\d+)", line))
    return ports


COUNTER = re.compile(r"\b(bytes_sent|bytes_retrans|bytes_received|segs_out|segs_in):(\d+)")


def sockets():
    """Every TCP socket that is not listening: dicts with local, peer, pids, ino and counters."""
    out, cur = [], None
    for line in ss("-tinpeH"):
        if line[:1] in (" ", "\t"):
            if cur is not None:
                for name, value in COUNTER.findall(line):
                    cur[name] = int(value)
            continue
        parts = line.split()
        # state recv-q send-q local peer [users:(...)] ... ino:N ...
        if len(parts) < 5 or parts[0] == "LISTEN":
            cur = None
            continue
        ino = re.search(r"\bino:(\d+)", line)
        cur = {
            "state": parts[0],
            "local": parts[3],
            "peer": parts[4],
            "pids": {int(p) for p in re.findall(r"pid=(\d+)", line)},
            "ino": int(ino.group(1)) if ino else None,
        }
        out.append(cur)
    return out


def port_of(endpoint):
    return int(endpoint.rsplit(":", 1)[1])


class Bed:
    """The bed's processes and ports, found from its listeners."""

    def __init__(self, args):
        self.peer_ports = {"nodeA": args.node_a_peer, "nodeB": args.node_b_peer}
        self.api_ports = {"nodeA": args.node_a_api, "nodeB": args.node_b_api}
        self.feed_ports = {"proxyA": args.feed_a, "proxyB": args.feed_b}
        want = {"nodeA": args.node_a_peer, "nodeB": args.node_b_peer,
                "proxyA": args.proxy_a_port, "proxyB": args.proxy_b_port}
        ports = listeners()
        self.pid = {}
        for role, port in want.items():
            pids = ports.get(port)
            if not pids:
                raise SystemExit(f"sync-bytes: nothing (visible) listens on port {port} ({role}); "
                                 "is the bed running, and may ss -p see its processes?")
            self.pid[role] = min(pids)
        self.role = {pid: role for role, pid in self.pid.items()}
        self.feed = any(p in ports for p in self.feed_ports.values())

    def kind(self, x, y, local, peer):
        """What a connection between roles x, y (x's socket: local, peer) is."""
        ports = {port_of(local), port_of(peer)}
        if {x, y} == {"nodeA", "nodeB"} and ports & set(self.peer_ports.values()):
            return "peering"
        if {x, y} == {"proxyA", "nodeB"} and self.api_ports["nodeB"] in ports:
            return "confirm"
        if {x, y} == {"proxyB", "nodeA"} and self.api_ports["nodeA"] in ports:
            return "confirmB"
        if x.startswith("node") and y.startswith("proxy") and ports & set(self.feed_ports.values()):
            return "feed"
        if (x, y) in (("nodeA", "proxyA"), ("nodeB", "proxyB")):
            return "local"
        return "other"


class Tracker:
    """Reads every counter every poll_ms, keyed by socket inode; totals since the start."""

    def __init__(self, bed, poll_ms):
        self.bed, self.poll = bed, poll_ms / 1000
        self.lock = threading.Lock()
        self.base = {}  # ino -> (sent, recv, segs_out, segs_in) when first seen
        self.last = {}  # ino -> (key, sent, recv, segs_out, segs_in)
        self.started = False
        self.closed = 0
        self.stop = threading.Event()
        self.read()
        self.started = True
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop.wait(self.poll):
            try:
                self.read()
            except (subprocess.CalledProcessError, OSError):
                pass

    def read(self):
        socks = sockets()
        owner = {}
        for s in socks:
            for pid in s["pids"]:
                if pid in self.bed.role:
                    owner[s["local"]] = self.bed.role[pid]
        seen = set()
        with self.lock:
            for s in socks:
                x = owner.get(s["local"])
                y = owner.get(s["peer"])
                if x is None or y is None or x == y or s["ino"] is None:
                    continue
                if ROLES.index(x) > ROLES.index(y):
                    continue  # counted on the other end's socket
                sent = s.get("bytes_sent", 0) - s.get("bytes_retrans", 0)
                row = (sent, s.get("bytes_received", 0), s.get("segs_out", 0), s.get("segs_in", 0))
                key = (x, y, self.bed.kind(x, y, s["local"], s["peer"]))
                ino = s["ino"]
                seen.add(ino)
                if ino not in self.base:
                    self.base[ino] = row if not self.started else (0, 0, 0, 0)
                self.last[ino] = (key, *row)
            for ino in list(self.last):
                if ino not in seen and self.last[ino][0] is not None:
                    # Closed since the last reading: keep its last counters, mark it.
                    key, *row = self.last[ino]
                    self.last[ino] = (None, key, *row)
                    self.closed += 1

    def totals(self):
        """{(x, y, kind): [x->y, y->x, segs x->y, segs y->x]} since the tracker started."""
        with self.lock:
            out = {}
            for ino, entry in self.last.items():
                if entry[0] is None:
                    entry = entry[1:]
                key, *row = entry
                base = self.base[ino]
                acc = out.setdefault(key, [0, 0, 0, 0])
                for i in range(4):
                    acc[i] += row[i] - base[i]
            return out

    def settled(self, settle_ms, limit_s=5.0):
        """Totals once they have not changed for settle_ms (at most limit_s)."""
        deadline = time.monotonic() + limit_s
        self.read()
        before = self.totals()
        while True:
            time.sleep(settle_ms / 1000)
            self.read()
            now = self.totals()
            if now == before or time.monotonic() > deadline:
                return now
            before = now

    def close(self):
        self.stop.set()
        self.thread.join()


def diff(after, before):
    out = {}
    for key in set(after) | set(before):
        a, b = after.get(key, [0] * 4), before.get(key, [0] * 4)
        d = [a[i] - b[i] for i in range(4)]
        if any(d):
            out[key] = d
    return out


def summary(d):
    """Bytes by what they are, from a diff: peering A->B, B->A, confirm, feed, other."""
    s = {"a_to_b": 0, "b_to_a": 0, "confirm": 0, "confirm_b": 0, "feed": 0, "feed_a": 0, "feed_b": 0,
         "local": 0, "other": 0,
         "segs_a_to_b": 0, "segs_b_to_a": 0}
    for (x, y, kind), (xy, yx, sxy, syx) in d.items():
        if kind == "peering":
            fwd = x == "nodeA"
            s["a_to_b"] += xy if fwd else yx
            s["b_to_a"] += yx if fwd else xy
            s["segs_a_to_b"] += sxy if fwd else syx
            s["segs_b_to_a"] += syx if fwd else sxy
        elif kind == "confirm":
            s["confirm"] += xy + yx
        elif kind == "confirmB":
            s["confirm_b"] += xy + yx
        elif kind == "feed":
            s["feed"] += xy + yx
            s["feed_a" if x == "nodeA" else "feed_b"] += xy + yx
        elif kind == "local":
            s["local"] += xy + yx
        else:
            s["other"] += xy + yx
    s["total"] = s["a_to_b"] + s["b_to_a"]
    return s


# ------------------------------------------------------------------------------------------
# the conversations


class Proxy:
    """One proxy over one persistent HTTP/1.1 connection."""

    def __init__(self, base, timeout=60):
        url = urllib.parse.urlsplit(base)
        self.host, self.port, self.timeout = url.hostname, url.port or 80, timeout
        self.conn = None

    def post(self, path, body):
        data = json.dumps(body).encode()
        for attempt in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self.conn.request("POST", path, body=data, headers={"Content-Type": "application/json"})
                resp = self.conn.getresponse()
                raw = resp.read()
                break
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = None
                if attempt == 1:
                    raise
        try:
            reply = json.loads(raw)
        except ValueError:
            reply = {"_raw": raw.decode(errors="replace")}
        return resp.status, reply


def conversation(proxy, tracker, args, mode, turns, user):
    """One session of `turns` turns on proxy A; returns (per-turn summaries, reply words)."""
    before = tracker.settled(args.settle_ms)
    session_id, per_turn, words = None, [], None
    for turn in range(1, turns + 1):
        body = {"mode": mode, "user_id": user, "turn": turn,
                "prompt": MESSAGES[(turn - 1) % len(MESSAGES)],
                "n_predict": args.n_predict, "temperature": 0, "seed": 42}
        if session_id:
            body["session_id"] = session_id
        status, reply = proxy.post("/completion", body)
        if status != 200:
            raise SystemExit(f"sync-bytes: {mode} turn {turn}: HTTP {status}: {json.dumps(reply)[:300]}")
        session_id = session_id or reply.get("session_id")
        words = len(str(reply.get("content", "")).split())
        after = tracker.settled(args.settle_ms)
        per_turn.append(summary(diff(after, before)))
        before = after
    return per_turn, words


def add(rows):
    total = {}
    for r in rows:
        for k, v in r.items():
            total[k] = total.get(k, 0) + v
    return total


def measure(args):
    bed = Bed(args)
    tracker = Tracker(bed, args.poll_ms)
    proxy = Proxy(args.a)
    tag = args.tag or time.strftime("%H%M%S")
    label = args.label or ("with the trigger feed" if bed.feed else "without the trigger feed")
    print(f"sync-bytes: nodeA pid {bed.pid['nodeA']}, nodeB pid {bed.pid['nodeB']}, "
          f"proxy A pid {bed.pid['proxyA']}, proxy B pid {bed.pid['proxyB']}; {label}")
    result = {"label": label, "feed": bed.feed, "conversations": [], "flat": []}
    try:
        if args.warmup:
            rows, _ = conversation(proxy, tracker, args, "tokenized", args.warmup, f"bytes{tag}warm")
            result["warmup"] = add(rows)
        # Idle: what the links carry with no turn at all.
        idle0 = tracker.settled(args.settle_ms)
        time.sleep(args.idle_s)
        result["idle"] = summary(diff(tracker.settled(args.settle_ms), idle0))
        result["idle"]["seconds"] = args.idle_s
        for mode in args.modes:
            for turns in args.turns:
                rows, words = conversation(proxy, tracker, args, mode, turns, f"bytes{tag}{mode}{turns}")
                result["conversations"].append({"mode": mode, "turns": turns, "reply_words": words,
                                                "total": add(rows), "per_turn": rows})
        for mode in args.flat_modes:
            if args.flat_turns:
                rows, words = conversation(proxy, tracker, args, mode, args.flat_turns,
                                           f"bytes{tag}{mode}flat{args.flat_turns}")
                result["flat"].append({"mode": mode, "turns": args.flat_turns, "reply_words": words,
                                       "total": add(rows), "per_turn": rows})
    finally:
        tracker.close()
    result["closed_connections"] = tracker.closed
    report(result)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
        print(f"\nsync-bytes: JSON in {args.json}")
    return 0


def report(r):
    print(f"\nBytes between the FReD nodes (TCP payload, TLS included), conversations on proxy A, {r['label']}")
    print(f"(warm-up and idle not included; idle {r['idle']['seconds']:.0f} s: peering {r['idle']['total']} B, "
          f"confirm {r['idle']['confirm']} B, feed {r['idle']['feed']} B; "
          f"connections closed during the run: {r['closed_connections']})")
    head = (f"{'mode':<10}{'turns':>5}{'words':>6}{'A->B':>9}{'B->A':>9}{'total':>9}"
            f"{'orig':>9}{'total/orig':>11}{'target':>7}{'prev':>8}{'confirm':>9}{'feedA':>8}{'feedB':>8}{'other':>7}")
    print(head)
    for c in r["conversations"] + r["flat"]:
        t, key = c["total"], (c["mode"], c["turns"])
        orig, prev = ORIGINAL.get(key), PREVIOUS.get(key)
        share = f"{t['total'] / orig:.1%}" if orig else "-"
        target = f"{TARGET[c['turns']]:.0%}" if c["turns"] in TARGET else "-"
        ok = "" if not orig else (" ok" if t["total"] <= TARGET[c["turns"]] * orig else " NO")
        print(f"{c['mode']:<10}{c['turns']:>5}{c['reply_words']:>6}{t['a_to_b']:>9}{t['b_to_a']:>9}"
              f"{t['total']:>9}{orig or '-':>9}{share:>11}{target + ok:>7}{prev or '-':>8}"
              f"{t['confirm']:>9}{t['feed_a']:>8}{t['feed_b']:>8}{t['other']:>7}")
    for f in r["flat"]:
        rows = f["per_turn"]
        totals = [x["total"] for x in rows]
        pick = [n for n in (1, 2, 10, 25, 50) if n <= len(rows)]
        print(f"\nPer turn, {f['mode']} {f['turns']} turns (peering A->B / B->A / total; confirm; feed A, B):")
        for n in pick:
            x = rows[n - 1]
            print(f"  turn {n:>3}: {x['a_to_b']:>6} / {x['b_to_a']:>6} / {x['total']:>6}   "
                  f"confirm {x['confirm']:>6}   feed A {x['feed_a']:>5} B {x['feed_b']:>5}")
        if len(rows) > 1:
            rest = totals[1:]
            lo, hi = min(rest), max(rest)
            print(f"  turns 2..{len(rows)}: total min {lo} (turn {rest.index(lo) + 2}), "
                  f"max {hi} (turn {rest.index(hi) + 2}), mean {sum(rest) / len(rest):.0f}; "
                  f"A->B min {min(x['a_to_b'] for x in rows[1:])} max {max(x['a_to_b'] for x in rows[1:])}")
            half = len(rest) // 2
            if half:
                first, last = sum(rest[:half]) / half, sum(rest[-half:]) / half
                print(f"  mean of turns 2..{half + 1}: {first:.0f} B, of the last {half}: {last:.0f} B "
                      f"({'flat' if abs(last - first) <= 0.05 * first else 'NOT flat'} within 5%)")
            print("  all: " + " ".join(str(t) for t in totals))


# ------------------------------------------------------------------------------------------
# a FAKE llama-server with a 20-word reply (the protocol of host/lab/src/fake_llm.rs)

REPLY = ("Start with small examples, multiply rows by columns by hand, "
         "then check each result with a library such as NumPy.")
SPECIALS = ["<|im_start|>", "<|im_end|>", "<|begin_of_text|>", "<|start_header_id|>",
            "<|end_header_id|>", "<|eot_id|>"]
N_CTX, N_VOCAB = 32768, 512


def tokenize(text, special=True):
    data, ids, at = text.encode(), [], 0
    while at < len(data):
        if special:
            for i, sp in enumerate(SPECIALS):
                if data.startswith(sp.encode(), at):
                    ids.append(256 + i)
                    at += len(sp)
                    break
            else:
                ids.append(data[at])
                at += 1
            continue
        ids.append(data[at])
        at += 1
    return ids


def detokenize(ids):
    out = bytearray()
    for i in ids:
        out += bytes([i]) if i < 256 else SPECIALS[i - 256].encode()
    return out.decode(errors="replace")


def fake_llama(args):
    reply_text = args.reply
    calls = [0]

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def send(self, obj, status=200):
            data = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path == "/props":
                self.send({"default_generation_settings": {"n_ctx": N_CTX}})
            elif self.path == "/v1/models":
                self.send({"data": [{"meta": {"n_vocab": N_VOCAB, "n_ctx": N_CTX}}]})
            elif self.path == "/health":
                self.send({"status": "ok"})
            else:
                self.send({"error": "not found"}, 404)

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            if self.path == "/tokenize":
                self.send({"tokens": tokenize(body.get("content", ""), body.get("parse_special", True) is not False)})
            elif self.path == "/detokenize":
                self.send({"content": detokenize(body.get("tokens", []))})
            elif self.path == "/completion":
                calls[0] += 1
                prompt = body.get("prompt")
                if isinstance(prompt, str):
                    text, n = prompt, len(prompt.encode())
                elif isinstance(prompt, list):
                    ids = [i for i in prompt if isinstance(i, int)]
                    text, n = detokenize(ids), len(ids)
                else:
                    text, n = json.dumps(prompt), 0
                predicted = len(reply_text.encode())
                reply = {"content": reply_text, "prompt": text, "stop": True, "stop_type": "eos",
                         "tokens_predicted": predicted, "tokens_evaluated": n, "truncated": False,
                         "timings": {"prompt_n": n, "cache_n": 0, "prompt_ms": 0.0,
                                     "predicted_n": predicted, "predicted_ms": 0.0}}
                if body.get("return_tokens") is True:
                    reply["tokens"] = tokenize(reply_text, False)
                if body.get("stream") is True:
                    self.send({"error": {"code": 501, "message": "this fake does not stream"}}, 501)
                    return
                self.send(reply)
            else:
                self.send({"error": "not found"}, 404)

    def stop(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print(f"http://127.0.0.1:{server.server_address[1]}", flush=True)
    print(f"sync-bytes fake-llama: FAKE llama-server, fixed reply of {len(reply_text.split())} words, "
          f"{len(reply_text.encode())} bytes (one token per byte)", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    print(f"sync-bytes fake-llama: {calls[0]} completions served", file=sys.stderr)
    return 0


def main():
    argv = sys.argv[1:]
    command = "measure"
    if argv and argv[0] in ("measure", "fake-llama"):
        command, argv = argv[0], argv[1:]
    ap = argparse.ArgumentParser(prog="sync-bytes.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    if command == "fake-llama":
        ap.add_argument("--port", type=int, default=18101)
        ap.add_argument("--reply", default=REPLY)
        return fake_llama(ap.parse_args(argv))
    csv = lambda s: [x for x in s.split(",") if x]  # noqa: E731
    ap.add_argument("--a", default="http://127.0.0.1:8081", help="proxy A (all turns go here)")
    ap.add_argument("--b", default="http://127.0.0.1:8082", help="proxy B (only its port is used)")
    ap.add_argument("--modes", type=csv, default=["raw", "tokenized"])
    ap.add_argument("--turns", type=lambda s: [int(x) for x in csv(s)], default=[9, 30])
    ap.add_argument("--flat-turns", type=int, default=50)
    ap.add_argument("--flat-modes", type=csv, default=["tokenized"])
    ap.add_argument("--warmup", type=int, default=2, help="turns of a warm-up session (0: none)")
    ap.add_argument("--idle-s", type=float, default=3, help="seconds of idle traffic to report")
    ap.add_argument("--n-predict", type=int, default=32)
    ap.add_argument("--poll-ms", type=float, default=50)
    ap.add_argument("--settle-ms", type=float, default=150)
    ap.add_argument("--node-a-peer", type=int, default=5555)
    ap.add_argument("--node-b-peer", type=int, default=5556)
    ap.add_argument("--node-a-api", type=int, default=9001)
    ap.add_argument("--node-b-api", type=int, default=9002)
    ap.add_argument("--feed-a", type=int, default=8091)
    ap.add_argument("--feed-b", type=int, default=8092)
    ap.add_argument("--tag", help="part of the user ids (default: the time), so runs do not meet")
    ap.add_argument("--label", help="a name for this run in the report")
    ap.add_argument("--json", help="write every figure, per turn too, to this file")
    args = ap.parse_args(argv)
    args.proxy_a_port = urllib.parse.urlsplit(args.a).port or 80
    args.proxy_b_port = urllib.parse.urlsplit(args.b).port or 80
    return measure(args)


if __name__ == "__main__":
    sys.exit(main())
