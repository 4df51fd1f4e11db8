#!/usr/bin/env bash
# CatLIP vs CLIP with the same image encoder (PAPERS.md §6.5): training-step time at batch 64,
# 256 and 1024, then one epoch of each objective on captioned Fashion-MNIST and a linear probe of
# both encoders' frozen features. Writes docs/catlip.tsv and docs/catlip-step-time.png.
set -euo pipefail
cd "$(dirname "$0")/../.."

bash build/debian-packages.sh dataset-fashion-mnist wordnet gnuplot-nox
dotnet build src/Dsl.Cli -c Release --nologo -v quiet
dsl="dotnet src/Dsl.Cli/bin/Release/net10.0/dsl.dll"
spec=examples/catlip/encoders.dsl
data=data/fashion-captions
out=${OUT:-runs/catlip}
mkdir -p "$out" docs

[ -f $data/train.jsonl ] || $dsl data fashion-captions --out $data
[ -f $data/train.catlip.jsonl ] || $dsl data catlip-labels $data/train.jsonl --out $data/train.catlip.jsonl --vocabulary-size 40
[ -f $data/test.catlip.jsonl ] || $dsl data catlip-labels $data/test.jsonl --out $data/test.catlip.jsonl --vocabulary $data/train.catlip.vocab.tsv
$dsl check $spec

# Step time: the two models alternate, three rounds per batch size; medians of the rounds.
json() { sed -n 's/.*"'"$1"'":\([0-9.eE+-]*\).*/\1/p'; }
printf 'batch\tcatlip_step_ms\tclip_step_ms\tclip_over_catlip\n' > docs/catlip.tsv
for batch in 64 256 1024; do
  cat_ms=(); clip_ms=()
  for round in 1 2 3; do
    cat_ms+=("$($dsl bench $spec --model catlip --batch $batch --warmup 1 --repeats 5 --json | json train_step_ms)")
    clip_ms+=("$($dsl bench $spec --model clip --batch $batch --warmup 1 --repeats 5 --json | json train_step_ms)")
  done
  median() { printf '%s\n' "$@" | sort -g | sed -n 2p; }
  c=$(median "${cat_ms[@]}"); l=$(median "${clip_ms[@]}")
  printf '%d\t%.1f\t%.1f\t%.2f\n' $batch "$c" "$l" "$(echo "$l / $c" | bc -l)" >> docs/catlip.tsv
done
cat docs/catlip.tsv

for model in catlip clip; do
  start=$SECONDS
  $dsl train $spec --model $model --out "$out/$model"
  echo "$model: trained in $((SECONDS - start)) s"
  $dsl eval $spec --model $model --checkpoint "$out/$model/checkpoint" --probe --json | tee "$out/$model/eval.json"
done
printf '\nmodel\tlinear_probe\n' >> docs/catlip.tsv
for model in catlip clip; do
  printf '%s\t%s\n' $model "$(json linear_probe < "$out/$model/eval.json")" >> docs/catlip.tsv
done
cat docs/catlip.tsv

gnuplot <<'PLOT'
set terminal pngcairo size 640,400
set output 'docs/catlip-step-time.png'
set title 'Training step, same image encoder: CatLIP (BCE) vs CLIP (InfoNCE + text tower)'
set xlabel 'batch size'; set ylabel 'ms per step (median)'; set logscale xy; set key top left
set xtics (64, 256, 1024)
plot 'docs/catlip.tsv' every ::1::3 using 1:2 with linespoints title 'CatLIP', \
     '' every ::1::3 using 1:3 with linespoints title 'CLIP'
PLOT
echo "wrote docs/catlip.tsv and docs/catlip-step-time.png"
