#!/usr/bin/env bash
# CatLIP's cost claim (CatLIP, arXiv 2404.15653; apple/corenet projects/catlip): with the same image encoder, a training step of CatLIP
# (multi-label BCE over mined synsets, no text tower) against CLIP (InfoNCE with a text tower and
# a B×B similarity) at batch 64, 256 and 1024. The models are examples/catlip/encoders.dsl's; the
# step is `dsl bench`'s (forward, the train block's loss, backward, an SGD update, random inputs).
# The two alternate for three rounds per batch size; each figure is the median of the rounds'
# medians. Writes docs/catlip-step-time.tsv and docs/catlip-step-time.png.
set -euo pipefail
cd "$(dirname "$0")/.."

bash build/debian-packages.sh gnuplot-nox
dotnet build src/Dsl.Cli -c Release --nologo -v quiet
dsl="dotnet src/Dsl.Cli/bin/Release/net10.0/dsl.dll"
spec=examples/catlip/encoders.dsl
table=docs/catlip-step-time.tsv

step_ms() { $dsl bench $spec --model "$1" --batch "$2" --warmup 1 --repeats "${REPEATS:-5}" --json | sed -n 's/.*"train_step_ms_median":\([0-9.eE+-]*\).*/\1/p'; }
median() { printf '%s\n' "$@" | sort -g | sed -n "$(( ($# + 1) / 2 ))p"; }

printf '# batch\tcatlip_step_ms\tclip_step_ms\tclip_over_catlip\n' > $table
for batch in 64 256 1024; do
  cat_ms=(); clip_ms=()
  for round in 1 2 3; do
    cat_ms+=("$(step_ms catlip $batch)")
    clip_ms+=("$(step_ms clip $batch)")
  done
  c=$(median "${cat_ms[@]}"); l=$(median "${clip_ms[@]}")
  printf '%d\t%.1f\t%.1f\t%.2f\n' $batch "$c" "$l" "$(echo "$l / $c" | bc -l)" | tee -a $table
done

gnuplot <<'PLOT'
set terminal pngcairo size 640,400
set output 'docs/catlip-step-time.png'
set title 'Training step, same image encoder: CatLIP (BCE) vs CLIP (InfoNCE, text tower)' font ',10'
set xlabel 'batch size'; set ylabel 'ms per step (median)'; set logscale xy; set key top left
set xtics (64, 256, 1024)
plot 'docs/catlip-step-time.tsv' using 1:2 with linespoints title 'CatLIP', \
     '' using 1:3 with linespoints title 'CLIP'
PLOT
echo "wrote $table and docs/catlip-step-time.png"
