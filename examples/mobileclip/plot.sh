#!/usr/bin/env bash
# docs/mobileclip-zero-shot.png from docs/mobileclip.tsv (written by run.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
gnuplot <<'PLOT'
set terminal pngcairo size 820,460
set output 'docs/mobileclip-zero-shot.png'
set title 'Zero-shot top-1 on the Fashion-MNIST test set (students: same model, same 312 steps)' font ',10'
set ylabel 'zero-shot top-1 (%)'; set yrange [70:85]; set grid ytics
set style fill solid 0.7; set boxwidth 0.6; set xtics rotate by -25 scale 0; set bmargin 7; set rmargin 18
plot 'docs/mobileclip.tsv' every ::1 using 0:($3*100):xtic(stringcolumn(1).' '.stringcolumn(2)) with boxes notitle, \
     '' every ::1 using 0:($3*100):(sprintf('%.2f', $3*100)) with labels offset 0,0.8 notitle
PLOT
echo "wrote docs/mobileclip-zero-shot.png"
