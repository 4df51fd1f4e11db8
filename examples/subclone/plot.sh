#!/usr/bin/env bash
# docs/subclone-text.png and docs/subclone-vision.png from docs/subclone-curves.tsv (run.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
for task in text vision; do
  for init in random subclone subclone-scaled; do
    awk -F'\t' -v t=$task -v i=$init '$1 == t && $2 == i { print $3, $4 }' docs/subclone-curves.tsv > /tmp/subclone-$task-$init.dat
  done
  target=$(tail -n 1 /tmp/subclone-$task-random.dat | cut -d' ' -f2)
  title="text: byte-level decoder, KJV Bible"
  [ $task = vision ] && title="vision: ViT, Fashion-MNIST"
  gnuplot <<PLOT
set terminal pngcairo size 820,460
set output 'docs/subclone-$task.png'
set title "$title — child d 64, 4 blocks: random init vs subcloned" font ',10'
set xlabel 'training step'; set ylabel 'held-out loss'; set grid
plot '/tmp/subclone-$task-random.dat' using 1:2 with linespoints title 'random init', \
     '/tmp/subclone-$task-subclone.dat' using 1:2 with linespoints title 'subcloned', \
     '/tmp/subclone-$task-subclone-scaled.dat' using 1:2 with linespoints title 'subcloned, weights scaled √(d/d′)', \
     $target with lines dashtype 2 lc rgb 'gray' title 'target: random init final loss'
PLOT
  echo "wrote docs/subclone-$task.png"
done
