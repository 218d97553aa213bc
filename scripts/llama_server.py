#!/usr/bin/env python3
"""Run llama.cpp's own HTTP server (from the PyPI wheel `xllamacpp`) on a GGUF model.

This is a launcher, not a server of ours: every endpoint and JSON field is llama.cpp's.
Usage: llama_server.py --model PATH [--host 127.0.0.1] [--port 8080] [--ctx 2048] [--threads 2]
Runs until SIGTERM/SIGINT.
"""
import argparse
import signal
import threading

import xllamacpp


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--ctx", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--parallel", type=int, default=1)
    args = ap.parse_args()

    params = xllamacpp.CommonParams()
    params.model.path = args.model
    params.n_ctx = args.ctx
    params.n_parallel = args.parallel
    params.hostnames = [args.host]
    params.port = args.port
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    server = xllamacpp.Server(params)
    print(f"llama.cpp server listening on {args.host}:{args.port}", flush=True)
    stop.wait()
    del server


if __name__ == "__main__":
    main()
