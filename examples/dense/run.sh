#!/usr/bin/env bash
# The dense example end to end: build fashion-scenes (image, 11-class mask, depth in metres),
# train the two-headed U-Net of scenes.dsl with its loss expression, and evaluate its checkpoint
# (mIoU, pixel accuracy, depth RMSE, AbsRel, δ₁ on the 2,000 test scenes).
set -euo pipefail
cd "$(dirname "$0")/../.."

bash build/debian-packages.sh dataset-fashion-mnist

dotnet build src/Dsl.Cli -c Release --nologo -v quiet
dsl="dotnet src/Dsl.Cli/bin/Release/net10.0/dsl.dll"
out=${OUT:-runs/unetScenes}

$dsl data fashion-scenes --out examples/dense/data/scenes
$dsl check examples/dense/scenes.dsl
start=$SECONDS
again=--overwrite; for a in "$@"; do [ "$a" = --resume ] && again=; done
$dsl train examples/dense/scenes.dsl --model unetScenes --out "$out" $again "$@"
echo "training wall time: $((SECONDS - start)) s"
$dsl eval examples/dense/scenes.dsl --model unetScenes --checkpoint "$out/checkpoint" --json
