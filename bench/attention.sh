#!/usr/bin/env bash
# Multi-head self-attention written in the language (bench/attention.dsl, model composed:
# linear, matmul, softmax, reshape/permute) against the built-in fused attention (model fused,
# the same parameters), timed in one process in alternating rounds; each ratio is the median of
# the per-round ratios, composed / fused, forward and train step, at batch 1 and 32 (T = 64,
# D = 128, 4 heads). Run it alone: other processes on the cores skew both sides unevenly.
# Writes docs/attention-latency.tsv.
set -euo pipefail
cd "$(dirname "$0")/.."
dotnet build src/Dsl.Cli -c Release --nologo -v quiet
dsl="dotnet src/Dsl.Cli/bin/Release/net10.0/dsl.dll"
json() { sed -n 's/.*"'"$1"'":\([0-9.eE+-]*\).*/\1/p'; }
printf 'batch\tforward_fused_ms\tforward_composed_ms\tforward_ratio_composed_over_fused\ttrain_step_ratio_composed_over_fused\n' > docs/attention-latency.tsv
for batch in 1 32; do
  r=$($dsl bench bench/attention.dsl --model fused --against bench/attention.dsl --against-model composed --batch $batch --rounds ${ROUNDS:-20} --json)
  printf '%s\t%s\t%s\t%s\t%s\n' $batch "$(echo "$r" | json forward_model_ms)" "$(echo "$r" | json forward_other_ms)" \
    "$(echo "$r" | json forward_ratio_other_over_model)" "$(echo "$r" | json train_step_ratio_other_over_model)" >> docs/attention-latency.tsv
done
cat docs/attention-latency.tsv
