#!/usr/bin/env python3
"""Kill parts of a real FReD test bed (two nodes, or three) in the middle of writes and check that no session
gets stuck and no acknowledged turn is lost.

Each scenario starts its own bed (fred/run-testbed.sh --keep-going --workdir WORKDIR/sN, plus
--bed-args), first waiting until the bed's fixed ports are free. SESSIONS sessions run in
parallel threads, each sending turns back to back; meanwhile one process is killed with SIGKILL
and later started again with the same command line, environment, working folder and data (read
from /proc before the kill; its output is appended to the bed's log of that process). If it
exits at once, it is started again, up to --restart-tries times; each exit is reported with
the log's fatal/panic line.

  1  kill nodeB's frednode while the sessions write on proxy A; keep writing on A; restart
     nodeB; then the final turns, starting on proxy B.
  2  kill nodeA's frednode (proxy A's own node) while the sessions write on proxy A (proxy A
     must answer 503, never a 200 it did not store); continue on proxy B; restart nodeA; then
     the final turns, starting on proxy A.
  3  (bed with --feed) kill proxy B (its trigger stays registered on nodeB) while the sessions
     write on proxy A (they must keep succeeding); start proxy B again; then the final turns,
     starting on proxy B.
  4  (bed with --nodes 3 --feed) kill nodeC's frednode, a third replica, while the sessions
     write on proxy A; keep writing, on A, then on B (each turn is relayed to, and confirmed on,
     a node that is down); nodeC stays down; then the final turns, alternating B and A.

The writers keep writing during the restart unless --quiet-restart. A turn's prompt is unique
to its session and turn and the same on every retry of it. A 503 is retried; a 409 naming a
later turn moves the session there; a 409 naming this turn or an earlier one is retried as
lag (with --follow-back, an earlier one is sent next instead). The final turns (--final-turns,
alternating between the proxies) are each retried on 409/503 for up to --final-window seconds:
a session with no 200 in that time is STUCK. Then both proxies' GET /sessions/{id} must show,
at position N, the prompt of every 200 for turn N: one that does not is LOST (a turn answered
200 twice with different prompts loses one of them). A history that cannot be read counts as
a failure too. Also counted: FReD's "node X has missed ..." reports in the frednode logs (a
relay that failed), by the phase of the turn. Prints the counts of each scenario and writes
them, with log digests, to WORKDIR/sN/chaos.json. Exits 1 if any session is stuck, any
acknowledged turn is lost or any history cannot be read.

Usage: fred/chaos.py [--scenarios 1,2,3,4] [--sessions 8] [--mode raw] [--workdir /tmp/chaosbed]
                     [--bed-args "--no-build --nase-cached --llama-url http://127.0.0.1:18100"]
                     [--quiet-restart] [--follow-back] [--final-turns 4] ...  (see --help)
Environment: FREDNODE, CARGO_TARGET_DIR, DISCEDGE_BIN etc. are passed on to run-testbed.sh.
Only the Python standard library is needed.
"""
import argparse
import collections
import json
import os
import random
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

FRED_DIR = os.path.dirname(os.path.abspath(__file__))
PORTS = [8081, 8082, 8083, 9001, 9002, 9003, 5555, 5556, 5557, 2379, 2380, 8091, 8092, 8093]
URL = {"A": "http://127.0.0.1:8081", "B": "http://127.0.0.1:8082", "C": "http://127.0.0.1:8083"}
# The proxies whose histories are checked: A and B (scenario 4's nodeC is down at the end).
CHECKED = ("A", "B")


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def port_open(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def call(method, url, body=None, timeout=30):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw, status = resp.read(), resp.status
    except urllib.error.HTTPError as err:
        raw, status = err.read(), err.code
    except (urllib.error.URLError, OSError) as err:
        return "conn", {"_error": str(getattr(err, "reason", err))}
    try:
        return status, json.loads(raw or b"{}")
    except ValueError:
        return status, {"_raw": raw.decode(errors="replace")[:300]}


# --- processes ---------------------------------------------------------------------------------
class Proc:
    """A process of the bed as /proc shows it, so it can be started again the same way."""

    def __init__(self, name, pid, logfile):
        self.name, self.pid, self.logfile = name, pid, logfile
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            self.argv = [a.decode() for a in f.read().split(b"\0") if a]
        with open(f"/proc/{pid}/environ", "rb") as f:
            self.env = dict(e.decode(errors="replace").split("=", 1)
                            for e in f.read().split(b"\0") if b"=" in e)
        self.cwd = os.readlink(f"/proc/{pid}/cwd")

    def kill9(self):
        os.kill(self.pid, signal.SIGKILL)
        for _ in range(100):
            try:
                with open(f"/proc/{self.pid}/stat") as f:
                    if f.read().split(") ")[1].startswith("Z"):
                        return
            except OSError:
                return
            time.sleep(0.05)

    def restart(self):
        out = open(self.logfile, "ab")
        out.write(f"\n=== chaos.py: restarted at {time.strftime('%H:%M:%S')}: "
                  f"{shlex.join(self.argv)}\n".encode())
        out.flush()
        p = subprocess.Popen(self.argv, env=self.env, cwd=self.cwd, stdout=out,
                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             start_new_session=True)
        self.pid = p.pid
        return p


class Bed:
    def __init__(self, workdir, bed_args):
        self.workdir, self.bed_args = workdir, bed_args
        self.restarted = []  # Popen objects this script started
        self.proc = None

    def start(self):
        waited = 0
        while any(port_open(p) for p in PORTS):
            if waited % 30 == 0:
                log(f"ports busy ({[p for p in PORTS if port_open(p)]}); waiting for them to be free")
            time.sleep(5)
            waited += 5
        os.makedirs(self.workdir, exist_ok=True)
        self.bedlog = os.path.join(self.workdir, "testbed.log")
        cmd = ["bash", os.path.join(FRED_DIR, "run-testbed.sh"), "--keep-going",
               "--workdir", self.workdir] + self.bed_args
        log(f"starting bed: {shlex.join(cmd)}")
        with open(self.bedlog, "wb") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.time() + 300
        while time.time() < deadline:
            text = open(self.bedlog, errors="replace").read()
            if "testbed: up." in text:
                break
            if self.proc.poll() is not None:
                raise SystemExit(f"the bed exited ({self.proc.returncode}); see {self.bedlog}:\n"
                                 + text[-2000:])
            time.sleep(0.5)
        else:
            raise SystemExit(f"the bed is not up after 300 s; see {self.bedlog}")
        self.pids = {m[0]: (int(m[1]), m[2]) for m in
                     re.findall(r"started (\S+) \(pid (\d+), log (\S+)\)", text)}
        log(f"bed up: {', '.join(f'{k}={v[0]}' for k, v in self.pids.items())}")

    def snapshot(self, name):
        pid, logfile = self.pids[name]
        return Proc(name, pid, logfile)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
        for p in self.restarted:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        self.restarted = []


# --- sessions ----------------------------------------------------------------------------------
class Session:
    def __init__(self, scenario, idx, mode, user):
        self.scenario, self.idx, self.mode, self.user = scenario, idx, mode, user
        self.sid = None
        self.turn = 1
        self.nonce = {}
        self.acks = []          # (turn, prompt, proxy) of every 200, in order
        self.skipped = []       # (turn, expected_turn) from a 409 naming a later turn
        self.regressed = []     # (turn, expected_turn) from a 409 naming an earlier turn
        self.events = []        # (time, phase, node, turn, status, code)
        self.inflight = False
        self.stuck = None
        self.follow_back = False  # follow a 409's expected_turn when it is an earlier turn

    def prompt(self, turn):
        if turn not in self.nonce:
            self.nonce[turn] = "%08x" % random.getrandbits(32)
        return f"chaos{self.scenario} s{self.idx} t{turn} {self.nonce[turn]}"

    def send(self, node, phase, timeout=30):
        """One request for the current turn; returns (status, reply)."""
        body = {"mode": self.mode, "user_id": self.user, "turn": self.turn,
                "prompt": self.prompt(self.turn), "n_predict": 4, "temperature": 0}
        if self.sid:
            body["session_id"] = self.sid
        self.inflight = True
        t0 = time.time()
        status, reply = call("POST", URL[node] + "/completion", body, timeout)
        self.inflight = False
        err = reply.get("error") if isinstance(reply, dict) else None
        code = (err.get("code") or err.get("type")) if isinstance(err, dict) else None
        self.events.append((t0, time.time() - t0, phase, node, self.turn, status, code,
                            None if status == 200 else json.dumps(reply)[:400]))
        if status == 200:
            self.sid = self.sid or reply.get("session_id")
            self.acks.append((self.turn, body["prompt"], node))
            self.turn += 1
        elif status == 409:
            exp = err.get("expected_turn") if isinstance(err, dict) else None
            if exp is None and isinstance(reply, dict):
                exp = reply.get("expected_turn")
            if isinstance(exp, int) and exp > self.turn:
                self.skipped.append((self.turn, exp))
                self.turn = exp
            elif isinstance(exp, int) and exp < self.turn:
                self.regressed.append((self.turn, exp))
                if self.follow_back:
                    # A client that continues from there sends a new message for that turn.
                    for t in [t for t in self.nonce if t >= exp]:
                        del self.nonce[t]
                    self.turn = exp
        return status, reply


class Driver:
    """Runs every session's turns back to back against the current target proxy."""

    def __init__(self, sessions, pause):
        self.sessions, self.pause = sessions, pause
        self.target, self.phase = "A", "warm"
        self.stop = threading.Event()
        self.threads = []

    def run_one(self, s):
        while not self.stop.is_set():
            if self.target is None:
                time.sleep(0.05)
                continue
            status, _ = s.send(self.target, self.phase)
            if status == 200:
                time.sleep(self.pause)
            else:
                time.sleep(0.1)

    def start(self):
        for s in self.sessions:
            t = threading.Thread(target=self.run_one, args=(s,), daemon=True)
            t.start()
            self.threads.append(t)

    def set(self, target="", phase=None):
        self.target = self.target if target == "" else target
        self.phase = phase or self.phase
        log(f"phase {self.phase}: " + (f"writing on proxy {self.target}" if self.target
                                        else "writers paused"))

    def run_after(self, secs):
        """Keeps writing SECS seconds after a restart, in phases of at most 5 s named
        "<phase>+0s", "<phase>+5s", ... (so a failure can be placed in time)."""
        base, t = self.phase, 0
        while t < secs:
            self.set(phase=f"{base}+{t}s")
            time.sleep(min(5, secs - t))
            t += 5

    def pause_for(self, start, args):
        """Runs START() with the writers paused if --quiet-restart (after the in-flight
        requests finished), else while they keep writing."""
        if not args.quiet_restart:
            return start()
        target, phase = self.target, self.phase
        self.set(target=None, phase="paused")
        while self.inflight():
            time.sleep(0.05)
        ok = start()
        self.set(target=target, phase=phase)
        return ok

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(60)

    def inflight(self):
        return sum(1 for s in self.sessions if s.inflight)


def final_turns(sessions, plan, window):
    """One turn of every session on each node of PLAN in order (e.g. "BAB": B, then A, then B),
    each retried on 409/503 (and connection errors) for up to WINDOW seconds; a session with no
    200 in that time is stuck (and sends no more turns)."""
    def one(s):
        for step, node in enumerate(plan, start=1):
            deadline = time.time() + window
            while True:
                status, reply = s.send(node, f"final{step}")
                if status == 200:
                    s.stuck = None
                    break
                s.stuck = f"final turn {step} on {node}: last answer {status}: {json.dumps(reply)[:300]}"
                if status not in (409, 503, "conn"):
                    s.stuck = "not retried: " + s.stuck
                    return
                if time.time() >= deadline:
                    return
                time.sleep(0.2)
    threads = [threading.Thread(target=one, args=(s,)) for s in sessions]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def check_history(s, node, tries=10):
    """NODE's view of the session against what was acknowledged, re-read a few times in case
    the node is still catching up. Returns (missing, extra, unreadable, note): the acknowledged
    turns not at their place in the history, the history's entries that were not acknowledged
    there, and the last error if the view could not be read at all."""
    note, missing, extra, unreadable = "", list(s.acks), [], None
    acked = {}
    for t, p, _ in s.acks:
        acked.setdefault(t, set()).add(p)
    for attempt in range(tries):
        status, view = call("GET", f"{URL[node]}/sessions/{s.sid}?user_id={s.user}")
        if status != 200:
            unreadable = f"GET {status}: {json.dumps(view)[:200]}"
            time.sleep(0.5)
            continue
        unreadable = None
        hist = [m.get("content", "") for m in view.get("history") or [] if m.get("role") == "user"]
        if view.get("history") is None:
            note = f"no history: {json.dumps(view)[:300]}"
        missing = [a for a in s.acks if a[0] > len(hist) or hist[a[0] - 1] != a[1]]
        extra = [(i + 1, h) for i, h in enumerate(hist) if h not in acked.get(i + 1, ())]
        if not missing:
            return [], extra, None, (f"complete after {attempt} re-reads" if attempt else "")
        note = (f"{len(hist)} user turns (head says turns={view.get('turns')}), "
                f"{len(s.acks)} acknowledged up to turn {max(acked)}")
        time.sleep(0.5)
    return missing, extra, unreadable, note


def ranges(turns):
    """[1,2,3,7] -> '1-3,7'"""
    out, run = [], []
    for t in turns:
        if run and t == run[-1] + 1:
            run.append(t)
            continue
        if run:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else f"{run[0]}")
        run = [t]
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else f"{run[0]}")
    return ",".join(out)


# --- log digests -------------------------------------------------------------------------------
def digest_logs(logdir, names):
    """Distinct WARN/ERROR-ish lines per log (numbers and ids folded), with counts."""
    out = {}
    pat = re.compile(r"WARN|ERROR|ERR|error|warn|missed|NodeStatus|panic|restarted", re.I)
    ansi = re.compile(r"\x1b\[[0-9;]*m")
    for name in names:
        path = os.path.join(logdir, f"{name}.log")
        if not os.path.exists(path):
            continue
        counts, first = collections.Counter(), {}
        for line in open(path, errors="replace"):
            line = ansi.sub("", line.rstrip())
            if not pat.search(line):
                continue
            key = re.sub(r"[0-9a-f]{8,}|\d+", "#", line)
            key = re.sub(r"^\S+\s+", "", key)[:200]
            counts[key] += 1
            first.setdefault(key, line[:400])
        out[name] = [(n, first[k]) for k, n in counts.most_common(12)]
    return out


# --- scenarios ---------------------------------------------------------------------------------
def crash_reason(logfile):
    """The first fatal/panic line after the last restart marker of LOGFILE."""
    text = open(logfile, errors="replace").read().split("=== chaos.py: restarted")[-1]
    m = re.search(r"^(fatal error:.*|panic:.*|.*\bFTL\b.*)$", re.sub(r"\x1b\[[0-9;]*m", "", text), re.M)
    return m.group(1)[:300] if m else "no fatal/panic line"


def bring_back(bed, victim, ready, tries, mark):
    """Starts VICTIM again until READY() (seconds or None) says it is up; up to TRIES starts.
    Returns True if it came up."""
    for attempt in range(1, tries + 1):
        p = victim.restart()
        bed.restarted.append(p)
        mark(f"restarted {victim.name} (start {attempt}), pid {p.pid}")
        t0 = time.time()
        while time.time() - t0 < 60:
            if p.poll() is not None:
                break
            if ready():
                mark(f"{victim.name} up {time.time() - t0:.2f} s after start {attempt}")
                return True
            time.sleep(0.1)
        if p.poll() is None:
            mark(f"{victim.name} not up 60 s after start {attempt}")
            return False
        mark(f"{victim.name} start {attempt} EXITED with status {p.returncode} after "
             f"{time.time() - t0:.2f} s: {crash_reason(victim.logfile)}")
        time.sleep(0.5)
    return False


def restart_again(drv, bed, victim, ready, args, mark):
    """--restart-again: with the writers paused, kill the restarted frednode once more and start
    it again (FReD fetches the items it is told it missed only when it starts)."""
    drv.set(target=None, phase="paused")
    while drv.inflight():
        time.sleep(0.05)
    mark(f"--restart-again: kill -9 {victim.name} pid {victim.pid} (writers paused)")
    victim.kill9()
    time.sleep(1)
    bring_back(bed, victim, ready, args.restart_tries, mark)


def scenario(n, args):
    workdir = os.path.join(args.workdir, f"s{n}")
    bed_args = shlex.split(args.bed_args) + {3: ["--feed"], 4: ["--nodes", "3", "--feed"]}.get(n, [])
    bed = Bed(workdir, bed_args)
    bed.start()
    timeline = []

    def mark(what):
        timeline.append((round(time.time() - t_start, 2), what))
        log(what)

    sessions = [Session(n, i, args.mode, f"chaos{n}u{i % 3}") for i in range(args.sessions)]
    for s in sessions:
        s.follow_back = args.follow_back
    drv = Driver(sessions, args.pause)
    t_start = time.time()
    try:
        drv.start()
        time.sleep(args.warm)
        if n == 1:
            victim = bed.snapshot("nodeB")
            drv.set(phase="B-down")
            mark(f"kill -9 nodeB frednode pid {victim.pid} ({drv.inflight()} requests in flight)")
            victim.kill9()
            time.sleep(args.down)
            drv.set(phase="B-restart")
            drv.pause_for(lambda: bring_back(bed, victim, lambda: port_open(9002),
                                             args.restart_tries, mark), args)
            drv.run_after(args.after)
            if args.restart_again:
                restart_again(drv, bed, victim, lambda: port_open(9002), args, mark)
            final = "B"
        elif n == 2:
            victim = bed.snapshot("nodeA")
            drv.set(phase="A-down")
            mark(f"kill -9 nodeA frednode pid {victim.pid} ({drv.inflight()} requests in flight)")
            victim.kill9()
            time.sleep(args.down)
            drv.set(target="B", phase="A-down-onB")
            time.sleep(args.down)
            drv.set(phase="A-restart-onB")
            drv.pause_for(lambda: bring_back(bed, victim, lambda: port_open(9001),
                                             args.restart_tries, mark), args)
            drv.run_after(args.after)
            if args.restart_again:
                restart_again(drv, bed, victim, lambda: port_open(9001), args, mark)
            final = "A"
        elif n == 4:
            victim = bed.snapshot("nodeC")
            drv.set(phase="C-down")
            mark(f"kill -9 nodeC frednode pid {victim.pid} ({drv.inflight()} requests in flight)")
            victim.kill9()
            time.sleep(args.down)
            drv.set(target="B", phase="C-down-onB")
            time.sleep(args.down)
            final = "B"
        else:
            victim = bed.snapshot("proxyB")
            drv.set(phase="proxyB-down")
            mark(f"kill -9 proxy B pid {victim.pid} ({drv.inflight()} requests in flight)")
            victim.kill9()
            time.sleep(args.down)
            drv.set(phase="proxyB-restart")
            drv.pause_for(lambda: bring_back(
                bed, victim, lambda: call("GET", URL["B"] + "/health", timeout=2)[0] == 200,
                args.restart_tries, mark), args)
            drv.run_after(args.after)
            final = "B"
        drv.finish()
        other = "A" if final == "B" else "B"
        plan = "".join(final if i % 2 == 0 else other for i in range(args.final_turns))
        mark(f"writers stopped; final turns of every session on proxies {plan}")
        final_turns(sessions, plan, args.final_window)
        mark("final turns done; checking histories")
        result = report(n, sessions, plan, workdir, timeline)
    finally:
        drv.stop.set()
        bed.stop()
    return result


def report(n, sessions, plan, workdir, timeline):
    by_phase = collections.defaultdict(collections.Counter)
    codes = collections.Counter()
    samples = {}
    slow = []
    for s in sessions:
        for t0, secs, phase, node, turn, status, code, body in s.events:
            key = status if status in (200, 409, 503) else "other"
            by_phase[f"{phase}@{node}"][key] += 1
            if status != 200:
                codes[f"{status} {code}"] += 1
                samples.setdefault(f"{status} {code}", body)
            if secs > 2:
                slow.append((round(secs, 2), phase, node, status))
    total = collections.Counter()
    for c in by_phase.values():
        total.update(c)
    stuck = {s.idx: s.stuck for s in sessions if s.stuck or not s.sid}
    lost, extras, notes, unreadable = {}, {}, {}, {}
    for s in sessions:
        if not s.sid:
            continue
        for node in CHECKED:
            missing, extra, bad, note = check_history(s, node)
            key = f"s{s.idx}@{node}"
            if bad:
                unreadable[key] = bad
            elif missing:
                lost[key] = {"turns": ranges(sorted({a[0] for a in missing})), "count": len(missing),
                             "answered_by": dict(collections.Counter(a[2] for a in missing))}
                twice = sorted(t for t, ps in collections.Counter(a[0] for a in s.acks).items() if ps > 1)
                if twice:
                    lost[key]["turns_acknowledged_twice"] = ranges(twice)
            if extra:
                extras[key] = extra[:5]
            if note:
                notes[key] = note
    # FReD's "node X has missed ..." reports (a relay that failed), by the phase of the turn.
    when = {}
    for s in sessions:
        for ev in s.events:
            if s.sid:
                when[(s.sid, ev[4])] = ev[2]
    missed = collections.Counter()
    pat = re.compile(r"nodeId (\S+) has missed kg \S+ id t\d\d([0-9a-f]{32})(\d{8})")
    for name in ("nodeA", "nodeB", "nodeC"):
        path = os.path.join(workdir, "logs", f"{name}.log")
        if os.path.exists(path):
            for m in pat.finditer(open(path, errors="replace").read()):
                missed[f"{m[1]} missed (reported by {name}) in phase "
                       f"{when.get((m[2], int(m[3])), '?')}"] += 1
    acked = sum(len(s.acks) for s in sessions)
    res = {
        "scenario": n, "sessions": len(sessions), "acked_turns": acked,
        "status_totals": {str(k): v for k, v in total.items()},
        "by_phase": {k: {str(a): b for a, b in v.items()} for k, v in by_phase.items()},
        "non_200": dict(codes), "non_200_samples": samples,
        "slow_requests_over_2s": sorted(slow, reverse=True)[:10], "slow_count": len(slow),
        "fred_missed_relays": dict(missed),
        "stuck_sessions": stuck, "lost_acked_turns": lost, "history_unreadable": unreadable,
        "unacknowledged_entries_in_history": extras, "history_notes": notes,
        "skipped_by_409": {s.idx: s.skipped for s in sessions if s.skipped},
        "regressed_by_409": {s.idx: s.regressed for s in sessions if s.regressed},
        "timeline": timeline,
        "logs": digest_logs(os.path.join(workdir, "logs"),
                            [f"{kind}{x}" for kind in ("node", "proxy") for x in "ABC"]),
    }
    with open(os.path.join(workdir, "chaos.json"), "w") as f:
        json.dump(res, f, indent=1)
    print(f"\n=== scenario {n}: {len(sessions)} sessions, {acked} acknowledged turns "
          f"(final turns on proxies {plan})")
    print("  totals: " + ", ".join(f"{k}: {v}" for k, v in sorted(res["status_totals"].items())))
    for k, v in res["by_phase"].items():
        print(f"  {k:<22} " + ", ".join(f"{a}: {b}" for a, b in sorted(v.items())))
    for k, v in samples.items():
        print(f"  {k} ({codes[k]}x), e.g. {v}")
    if missed:
        print("  FReD missed relays: " + ", ".join(f"{k}: {v}" for k, v in missed.items()))
    print(f"  requests over 2 s: {len(slow)} {res['slow_requests_over_2s'][:3]}")
    print(f"  stuck sessions: {len(stuck)}")
    for k, v in list(stuck.items())[:3]:
        print(f"    s{k}: {v}")
    print(f"  acknowledged turns missing from a readable history: "
          f"{sum(v['count'] for v in lost.values())}")
    for k, v in list(lost.items())[:6]:
        print(f"    {k}: {v}   ({notes.get(k, '')})")
    if unreadable:
        print(f"  histories that could not be read: {len(unreadable)} "
              f"({sorted(unreadable)[:4]}...), e.g. {next(iter(unreadable.values()))}")
    if extras:
        print(f"  unacknowledged entries in histories: {extras}")
    if res["skipped_by_409"] or res["regressed_by_409"]:
        print(f"  409 named a later turn (session moved there): {res['skipped_by_409']}")
        print("  409 named an earlier turn than the client's (turn sent -> expected_turn): "
              + str({k: v[:2] for k, v in res["regressed_by_409"].items()})[:600])
    other_notes = {k: v for k, v in notes.items() if k not in lost}
    if other_notes:
        print(f"  history notes: {other_notes}")
    print(f"  details: {os.path.join(workdir, 'chaos.json')}")
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenarios", default="1,2,3,4")
    ap.add_argument("--sessions", type=int, default=8)
    ap.add_argument("--mode", default="raw", help="raw or tokenized")
    ap.add_argument("--workdir", default="/tmp/chaosbed")
    ap.add_argument("--bed-args", default="--no-build --nase-cached --llama-url http://127.0.0.1:18100",
                    help="more run-testbed.sh options (--keep-going and --workdir are added; "
                         "--feed for scenario 3)")
    ap.add_argument("--warm", type=float, default=2, help="seconds of writes before the kill")
    ap.add_argument("--down", type=float, default=4, help="seconds of writes while it is down")
    ap.add_argument("--after", type=float, default=2, help="seconds of writes after the restart")
    ap.add_argument("--pause", type=float, default=0.02, help="seconds between a session's turns")
    ap.add_argument("--final-window", type=float, default=10,
                    help="seconds each final turn is retried on 409/503")
    ap.add_argument("--final-turns", type=int, default=4,
                    help="final turns per session, alternating, starting on the scenario's node")
    ap.add_argument("--follow-back", action="store_true",
                    help="on a 409 whose expected_turn is EARLIER than the turn sent, send that "
                         "turn next (default: retry the same turn, as for lag)")
    ap.add_argument("--quiet-restart", action="store_true",
                    help="pause the writers while the killed process is started again")
    ap.add_argument("--restart-again", action="store_true",
                    help="(scenarios 1, 2) after --after, pause the writers, kill the restarted "
                         "frednode again and start it again, before the final turns")
    ap.add_argument("--restart-tries", type=int, default=3,
                    help="starts of the killed process before giving up, if it exits at once")
    args = ap.parse_args()
    results = [scenario(int(n), args) for n in args.scenarios.split(",")]
    bad = [r["scenario"] for r in results
           if r["stuck_sessions"] or r["lost_acked_turns"] or r["history_unreadable"]]
    print(f"\nchaos: {'FAILED in scenario(s) ' + str(bad) if bad else 'no stuck sessions, no lost acknowledged turns'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
