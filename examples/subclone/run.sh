#!/usr/bin/env bash
# Weight subcloning and structured pruning at small scale (weight subcloning, arXiv 2312.09299; issue 5's claims).
# For text (a byte-level decoder on the King James Bible) and vision (a ViT on Fashion-MNIST):
#   1. train the parent (d 128, 8 blocks);
#   2. subclone it to the child shape (d 64, 4 blocks, 4 heads, half the FFN units), with and
#      without √(d/d′) weight scaling, and train those children and a randomly initialised one
#      for the same steps with the same schedule, evaluating the held-out loss every E steps;
#      steps-to-target = first evaluation at or below the random child's final loss;
#   3. prune the parent by 30% of its channels (magnitude and Taylor scores), evaluate, fine-tune
#      briefly at a tenth of the learning rate, evaluate again (latency: bench/prune.sh).
# Writes docs/subclone.tsv, docs/subclone-curves.tsv, docs/prune.tsv and the plots. Runs whose
# checkpoint exists are not trained again (delete $OUT to start over).
set -euo pipefail
cd "$(dirname "$0")/../.."

bash build/debian-packages.sh dataset-fashion-mnist bible-kjv gnuplot-nox
dotnet build src/Dsl.Cli -c Release --nologo -v quiet
dsl="dotnet src/Dsl.Cli/bin/Release/net10.0/dsl.dll"
dir=examples/subclone
out=${OUT:-runs/subclone}
mkdir -p "$out" docs data

# The Bible as one verse per line (references stripped); verses are the documents of the split.
[ -s data/kjv.txt ] || bible -f "Gen1:1-Rev22:21" | sed 's/^[^ ]* //' > data/kjv.txt

timed() { local start=$SECONDS; "$@"; echo "($((SECONDS - start)) s: $*)"; }
# Trains unless the run folder (the argument after --out) already has a checkpoint.
train() {
  local args=("$@") run=""
  for i in "${!args[@]}"; do [ "${args[$i]}" = --out ] && run=${args[$((i + 1))]}; done
  [ -f "$run/checkpoint/meta.json" ] && { echo "kept $run"; return; }
  timed $dsl train "$@"
}
json() { sed -n 's/.*"'"$1"'":\([0-9.eE+-]*\).*/\1/p'; }
# "step loss" per held-out evaluation of a run.
curve() { sed -n 's/.*"step":\([0-9]*\).*"test_loss":\([0-9.eE+-]*\).*/\1 \2/p' "$1/metrics.jsonl"; }
# The first evaluated step whose loss is at or below $2 (empty when never).
steps_to() { curve "$1" | awk -v t="$2" '$2 <= t { print $1; exit }'; }

# TASKS="text" or "vision" runs one (two such runs can share a machine; the last one to finish
# writes the docs from both).
for task in ${TASKS:-text vision}; do
  # file parent-steps child-steps eval-every fine-tune-steps fine-tune-lr
  case $task in
    text) spec="kjv.dsl ${TEXT_PARENT_STEPS:-1500} ${TEXT_CHILD_STEPS:-400} 25 150 2e-4" ;;
    vision) spec="fashion.dsl ${VISION_PARENT_STEPS:-936} ${VISION_CHILD_STEPS:-300} 25 300 2e-4" ;;
    *) echo "unknown task $task (text, vision)"; exit 1 ;;
  esac
  read -r file parent_steps child_steps every tune_steps tune_lr <<< "$spec"
  results=$out/$task-subclone.tsv curves=$out/$task-curves.tsv pruning=$out/$task-prune.tsv
  : > $results; : > $curves; : > $pruning
  src=$dir/$file
  parent=$out/$task-parent
  $dsl check $src
  train $src --model parent --out $parent --eval-steps 100 --max-steps $parent_steps
  $dsl eval $src --model parent --checkpoint $parent/checkpoint --json > $parent/eval.json

  # --- subcloning -----------------------------------------------------------------------------
  train $src --model child --out $out/$task-random --max-steps $child_steps --eval-steps $every
  for init in subclone subclone-scaled; do
    scale=""; [ $init = subclone-scaled ] && scale="--scale"
    # `child` is declared as `subclone parent (…)` in the .dsl file: the same graph the random
    # child trains, initialised here from the parent's checkpoint.
    [ -f $out/$task-$init/run/checkpoint/meta.json ] ||
      timed $dsl transform subclone $src --model child --checkpoint $parent/checkpoint --out $out/$task-$init $scale
    $dsl eval $out/$task-$init/model.dsl --checkpoint $out/$task-$init/checkpoint --json > $out/$task-$init/init.json
    train $out/$task-$init/model.dsl --init $out/$task-$init/checkpoint --out $out/$task-$init/run \
      --max-steps $child_steps --eval-steps $every
  done
  target=$(curve $out/$task-random | tail -n 1 | cut -d' ' -f2)
  random_steps=$(steps_to $out/$task-random $target)
  for init in random subclone subclone-scaled; do
    run=$out/$task-$init; [ $init = random ] || run=$out/$task-$init/run
    curve $run | awk -v t=$task -v i=$init '{ printf "%s\t%s\t%s\t%s\n", t, i, $1, $2 }' >> $curves
    n=$(steps_to $run $target)
    init_loss=-; [ $init = random ] || init_loss=$(json loss < $out/$task-$init/init.json)
    final=$(grep '"test_loss"' $run/metrics.jsonl | tail -n 1)
    accuracy=$(echo "$final" | json test_accuracy); accuracy=${accuracy:--}
    model_file=$src; [ $init = random ] || model_file=$out/$task-$init/model.dsl
    params=$($dsl check $model_file | sed -n 's/^model child: .*layers, \([0-9,]*\) parameters$/\1/p' | tr -d ,)
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' $task $init "${params:--}" $init_loss "$(echo "$final" | json test_loss)" $accuracy "${n:-never}" \
      "$(awk -v a=$random_steps -v b="${n:-0}" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }')" >> $results
  done

  # --- pruning 30% of the channels -----------------------------------------------------------------
  params=$($dsl check $src | sed -n 's/^model parent: .*layers, \([0-9,]*\) parameters$/\1/p' | tr -d ,)
  printf '%s\tdense\t%s\t%s\t%s\tthe trained parent\n' $task $params "$(json loss < $parent/eval.json)" "$(json accuracy < $parent/eval.json)" >> $pruning
  for criterion in magnitude taylor; do
    p=$out/$task-pruned-$criterion
    [ -f $p/run/checkpoint/meta.json ] ||
      timed $dsl transform prune $src --model parent --checkpoint $parent/checkpoint --out $p --channels 0.3 --criterion $criterion
    $dsl eval $p/model.dsl --checkpoint $p/checkpoint --json > $p/before.json
    train $p/model.dsl --init $p/checkpoint --out $p/run --max-steps $tune_steps --eval-steps $tune_steps --lr $tune_lr
    $dsl eval $p/model.dsl --checkpoint $p/run/checkpoint --json > $p/after.json
    params=$($dsl check $p/model.dsl | sed -n 's/^model parent: .*layers, \([0-9,]*\) parameters$/\1/p' | tr -d ,)
    printf '%s\tpruned-%s\t%s\t%s\t%s\tbefore fine-tuning\n' $task $criterion $params "$(json loss < $p/before.json)" "$(json accuracy < $p/before.json)" >> $pruning
    printf '%s\tpruned-%s\t%s\t%s\t%s\tafter %s fine-tuning steps at lr %s\n' $task $criterion $params "$(json loss < $p/after.json)" "$(json accuracy < $p/after.json)" $tune_steps $tune_lr >> $pruning
  done
done
[ -s $out/text-subclone.tsv ] && [ -s $out/vision-subclone.tsv ] || exit 0
{ printf 'task\tinit\tparameters\tinit_loss\tfinal_loss\tfinal_accuracy\tsteps_to_target\tspeedup\n'; cat $out/text-subclone.tsv $out/vision-subclone.tsv; } > docs/subclone.tsv
{ printf 'task\tinit\tstep\tloss\n'; cat $out/text-curves.tsv $out/vision-curves.tsv; } > docs/subclone-curves.tsv
{ printf 'task\tmodel\tparameters\tloss\taccuracy\tnote\n'; cat $out/text-prune.tsv $out/vision-prune.tsv; } > docs/prune.tsv
cat docs/subclone.tsv docs/prune.tsv
bash $dir/plot.sh
