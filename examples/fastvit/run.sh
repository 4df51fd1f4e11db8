#!/usr/bin/env bash
# Trainability of the FastViT family: train the width-scaled FastViT of fashion.dsl on
# Fashion-MNIST at 3×64×64, evaluate it, re-parameterise it into its deploy form and evaluate
# that too (the accuracy must not move). Installs the dataset package if it is missing.
set -euo pipefail
cd "$(dirname "$0")/../.."

bash build/debian-packages.sh dataset-fashion-mnist

dotnet build src/Dsl.Cli -c Release --nologo -v quiet
dsl="dotnet src/Dsl.Cli/bin/Release/net10.0/dsl.dll"
out=${OUT:-runs/fastvit-fashion}

$dsl check examples/fastvit/fashion.dsl
start=$SECONDS
# A rerun replaces the earlier run (dsl train refuses it otherwise), unless it resumes it.
again=--overwrite; for a in "$@"; do [ "$a" = --resume ] && again=; done
$dsl train examples/fastvit/fashion.dsl --out "$out" $again "$@"
echo "training wall time: $((SECONDS - start)) s"
echo "train form:";  $dsl eval examples/fastvit/fashion.dsl --checkpoint "$out/checkpoint" --json
$dsl transform reparam examples/fastvit/fashion.dsl --checkpoint "$out/checkpoint" --out "$out/deploy"
echo "deploy form:"; $dsl eval "$out/deploy/model.dsl" --checkpoint "$out/deploy/checkpoint" --json
