#!/usr/bin/env bash
# A byte-level decoder on the King James Bible (docs/lm.md): builds the corpus with
# `dsl data bible-kjv` (Debian package bible-kjv), trains examples/lm/kjv.dsl for MAX_STEPS
# optimizer steps (default 300, a third of the text), reports the validation loss and perplexity
# on the held-out books, and generates a greedy and a sampled continuation, with the KV cache
# and, for the greedy one, without it (the same text, slower).
set -euo pipefail
cd "$(dirname "$0")/../.."

bash build/debian-packages.sh bible-kjv
dotnet build src/Dsl.Cli -c Release --nologo -v quiet
dsl="dotnet src/Dsl.Cli/bin/Release/net10.0/dsl.dll"
spec=examples/lm/kjv.dsl
out=${OUT:-runs/kjv}
prompt=${PROMPT:-And God said}

[ -f data/kjv-books.txt ] || $dsl data bible-kjv --out data/kjv-books.txt
$dsl check $spec
$dsl show $spec | tail -n 2

start=$SECONDS
$dsl train $spec --out "$out" --overwrite --max-steps "${MAX_STEPS:-300}"
echo "trained in $((SECONDS - start)) s"
$dsl eval $spec --checkpoint "$out/checkpoint"

echo "--- greedy, with the KV cache:"
$dsl generate $spec --checkpoint "$out/checkpoint" --prompt "$prompt" --tokens 200 --temperature 0
echo "--- greedy, without the cache:"
$dsl generate $spec --checkpoint "$out/checkpoint" --prompt "$prompt" --tokens 200 --temperature 0 --no-cache
echo "--- sampled (temperature 0.8, top-k 20, seed 1):"
$dsl generate $spec --checkpoint "$out/checkpoint" --prompt "$prompt" --tokens 200 --temperature 0.8 --top-k 20 --seed 1
