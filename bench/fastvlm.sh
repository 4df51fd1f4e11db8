#!/usr/bin/env bash
# FastVLM's time-to-first-token at small scale: FastViTHD vs a 4-stage FastViT (MCi2) vs ViT-B/16
# at 256/512/768/1024 px, each followed by the same projector and small causal decoder
# (bench/fastvlm.dsl). Writes docs/fastvlm-ttft.tsv and the plot docs/fastvlm-ttft.png; prints
# the table. ROUNDS/REPEATS set the alternating rounds and repeats per round.
set -euo pipefail
cd "$(dirname "$0")/.."

bash build/debian-packages.sh gnuplot-nox

dotnet build bench/Dsl.Bench -c Release --nologo -v quiet
tsv=docs/fastvlm-ttft.tsv
dotnet bench/Dsl.Bench/bin/Release/net10.0/Dsl.Bench.dll --ttft bench/fastvlm.dsl \
  --rounds "${ROUNDS:-3}" --repeats "${REPEATS:-1}" --warmup 1 --tsv "$tsv" "$@"

# TTFT against resolution, one line per encoder, log scale: FastViTHD's grows slowest.
gnuplot <<PLOT
set terminal pngcairo size 900,560 font ",11"
set output "docs/fastvlm-ttft.png"
set title "Time to first token, batch 1, 2 CPU threads (bench/fastvlm.sh)"
set xlabel "input resolution (px)"
set ylabel "TTFT (ms, log scale)"
set logscale y
set key top left
set grid
set xtics (256, 512, 768, 1024)
plot for [f in "fastvithd fastvit vitB16"] "< awk -F'\\t' '\$1==\"".f."\"' $tsv" \
     using 2:6 with linespoints lw 2 pt 7 title f
PLOT
echo "wrote $tsv and docs/fastvlm-ttft.png"
