#!/usr/bin/env bash
# Pruned vs dense latency (issue 5, claim 3): each 30%-pruned model from examples/subclone/run.sh
# timed against its dense parent in one process, alternating rounds; the ratio is the median of
# the per-round ratios. Run it alone: other processes on the cores skew both sides unevenly.
# Writes docs/prune-latency.tsv.
set -euo pipefail
cd "$(dirname "$0")/.."
dotnet build src/Dsl.Cli -c Release --nologo -v quiet
dsl="dotnet src/Dsl.Cli/bin/Release/net10.0/dsl.dll"
out=${OUT:-runs/subclone}
json() { sed -n 's/.*"'"$1"'":\([0-9.eE+-]*\).*/\1/p'; }
printf 'task\tpruned\tbatch\tdense_params\tpruned_params\tforward_dense_ms\tforward_pruned_ms\tforward_ratio\ttrain_step_ratio\n' > docs/prune-latency.tsv
for spec in "text kjv.dsl 1 8" "vision fashion.dsl 1 32"; do
  read -r task file b1 b2 <<< "$spec"
  for batch in $b1 $b2; do
    p=$out/$task-pruned-magnitude
    r=$($dsl bench examples/subclone/$file --model parent --against $p/model.dsl --batch $batch --rounds ${ROUNDS:-10} --json)
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' $task "$(basename $p)" $batch "$(echo "$r" | json model_params)" "$(echo "$r" | json other_params)" \
      "$(echo "$r" | json forward_model_ms)" "$(echo "$r" | json forward_other_ms)" \
      "$(echo "$r" | json forward_ratio_other_over_model)" "$(echo "$r" | json train_step_ratio_other_over_model)" >> docs/prune-latency.tsv
  done
done
cat docs/prune-latency.tsv
