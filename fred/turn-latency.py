#!/usr/bin/env python3
"""Per-turn latency of DisCEdge-rs proxies: S sessions x T turns, one request at a time.

Turns go to proxy A; with --roam-every K, turns 1..K go to A, K+1..2K to B, 2K+1..3K to A, and
so on. Each turn is one of:
  new      turn 1 of a session;
  same     on the same proxy as the session's turn before;
  roamed   on the other proxy, the first turn the session has there;
  back     on the other proxy, which has served the session before (--roam-every K < T/2).
For each kind it prints the number of turns and p50/p99 (nearest rank) in milliseconds of:
  total        the whole request at the client (sent to reply read; persistent connections);
  store-read, policy, llm, store-write
               the parts of the proxy's Server-Timing header;
  beyond llm   total minus llm: the proxy's own time (store, policy, HTTP, JSON), not the model's.
Turns that fail (not 200) are counted and reported, and make the exit status 1.

Usage: fred/turn-latency.py [--a http://127.0.0.1:8081] [--b http://127.0.0.1:8082]
           [--mode tokenized] [--sessions 20] [--turns 10] [--roam-every 5] [--warmup 2]
           [--n-predict 32] [--user latency] [--json FILE] [--llama-url URL]
Meant for a fake model (host/lab/examples/fake_llama.rs) so the figures are the proxy and its store,
but works with any llama-server. Only the Python standard library is needed.
"""
import argparse
import http.client
import json
import math
import sys
import time
import urllib.parse

PARTS = ["store-read", "policy", "llm", "store-write"]
KINDS = ["new", "same", "roamed", "back"]


class Proxy:
    """One proxy, over one persistent HTTP/1.1 connection (reopened when it drops)."""

    def __init__(self, base, timeout):
        url = urllib.parse.urlsplit(base)
        if url.scheme != "http":
            raise SystemExit(f"{base}: only http:// URLs")
        self.host, self.port, self.timeout = url.hostname, url.port or 80, timeout
        self.conn = None

    def post(self, path, body):
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        for attempt in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
                self.conn.connect()
            start = time.perf_counter()
            try:
                self.conn.request("POST", path, body=data, headers=headers)
                resp = self.conn.getresponse()
                raw = resp.read()
            except (http.client.HTTPException, ConnectionError, OSError):
                self.conn.close()
                self.conn = None
                if attempt == 1:
                    raise
                continue
            elapsed = time.perf_counter() - start
            if resp.getheader("Connection", "").lower() == "close":
                self.conn.close()
                self.conn = None
            return resp.status, resp, raw, elapsed
        raise RuntimeError("unreachable")


def server_timing(header):
    """{name: ms} from 'store-read;dur=0.4, policy;dur=0.3, ...'."""
    out = {}
    for metric in (header or "").split(","):
        fields = [f.strip() for f in metric.split(";")]
        if not fields or not fields[0]:
            continue
        for f in fields[1:]:
            if f.startswith("dur="):
                try:
                    out[fields[0]] = float(f[4:])
                except ValueError:
                    pass
    return out


def pct(values, q):
    if not values:
        return float("nan")
    values = sorted(values)
    rank = min(max(math.ceil(q * len(values)), 1), len(values))
    return values[rank - 1]


def node_of(turn, roam_every):
    if roam_every <= 0:
        return 0
    return ((turn - 1) // roam_every) % 2


def run_session(proxies, args, samples, failures, record):
    session, seen = None, set()
    previous = None
    for turn in range(1, args.turns + 1):
        node = node_of(turn, args.roam_every)
        if turn == 1:
            kind = "new"
        elif node == previous:
            kind = "same"
        elif node not in seen:
            kind = "roamed"
        else:
            kind = "back"
        body = {
            "mode": args.mode,
            "turn": turn,
            "user_id": args.user,
            "prompt": f"Question {turn}: tell me one more fact about the number {turn}.",
            "n_predict": args.n_predict,
            "temperature": 0,
            "seed": 42,
        }
        if session is not None:
            body["session_id"] = session
        status, resp, raw, elapsed = proxies[node].post("/completion", body)
        if status != 200:
            failures.append((kind, "AB"[node], turn, status, raw[:200].decode(errors="replace")))
            return
        reply = json.loads(raw)
        session = reply.get("session_id", session)
        seen.add(node)
        previous = node
        if record:
            parts = server_timing(resp.getheader("Server-Timing"))
            samples.setdefault(kind, []).append((elapsed * 1e3, parts))


def main():
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        epilog="\n".join(__doc__.split("\n")[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--a", default="http://127.0.0.1:8081", help="proxy A's base URL")
    ap.add_argument("--b", default="http://127.0.0.1:8082", help="proxy B's base URL")
    ap.add_argument("--mode", default="tokenized", help="raw, tokenized, truncate, ...")
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--turns", type=int, default=10)
    ap.add_argument("--roam-every", type=int, default=0, metavar="K",
                    help="switch proxy every K turns (0: every turn on A)")
    ap.add_argument("--warmup", type=int, default=2, help="sessions run first and not counted")
    ap.add_argument("--n-predict", type=int, default=32)
    ap.add_argument("--user", default="latency")
    ap.add_argument("--timeout", type=float, default=120, help="seconds per request")
    ap.add_argument("--json", metavar="FILE", help="also write every sample to FILE")
    ap.add_argument("--llama-url", metavar="URL",
                    help="also time 50 calls straight to this llama-server's /completion, with this "
                         "client, as a baseline for what the client and the model take alone")
    args = ap.parse_args()
    if args.sessions < 1 or args.turns < 1:
        ap.error("--sessions and --turns must be at least 1")

    proxies = [Proxy(args.a, args.timeout), Proxy(args.b, args.timeout)]
    direct = []
    if args.llama_url:
        llama = Proxy(args.llama_url, args.timeout)
        for i in range(60):
            body = {"prompt": "Question 1: tell me one more fact about the number 1.",
                    "n_predict": args.n_predict}
            status, _, _, elapsed = llama.post("/completion", body)
            if status != 200:
                raise SystemExit(f"{args.llama_url}/completion answered {status}")
            if i >= 10:
                direct.append(elapsed * 1e3)
    samples, failures = {}, []
    for _ in range(args.warmup):
        run_session(proxies, args, {}, failures, record=False)
    started = time.perf_counter()
    for _ in range(args.sessions):
        run_session(proxies, args, samples, failures, record=True)
    wall = time.perf_counter() - started

    plan = "every turn on A" if args.roam_every <= 0 else (
        f"turns switch proxy every {args.roam_every} (A first)")
    print(f"mode {args.mode}: {args.sessions} sessions x {args.turns} turns, {plan}, "
          f"one request at a time; {args.warmup} warm-up sessions not counted; {wall:.1f} s")
    print("ms, p50 / p99 (nearest rank); beyond llm = total - Server-Timing llm")
    if direct:
        print(f"direct to the model (this client, {args.llama_url}/completion, {len(direct)} calls): "
              f"{pct(direct, 0.5):.2f}/{pct(direct, 0.99):.2f}")
    cols = ["total"] + PARTS + ["beyond llm"]
    print(f"{'turn':<7} {'n':>4} | " + " | ".join(f"{c:>15}" for c in cols))
    for kind in KINDS:
        rows = samples.get(kind, [])
        if not rows:
            continue
        cells = []
        for col in cols:
            if col == "total":
                values = [t for t, _ in rows]
            elif col == "beyond llm":
                values = [t - p["llm"] for t, p in rows if "llm" in p]
            else:
                values = [p[col] for _, p in rows if col in p]
            cells.append(f"{pct(values, 0.5):>7.2f}/{pct(values, 0.99):<7.2f}")
        print(f"{kind:<7} {len(rows):>4} | " + " | ".join(cells))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "samples": samples, "failures": failures}, f, indent=1)
    if failures:
        print(f"{len(failures)} failed turns (each ends its session), first ones:", file=sys.stderr)
        for failure in failures[:5]:
            print(f"  {failure}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
