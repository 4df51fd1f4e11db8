#!/usr/bin/env bash
# Image + metadata fusion end to end: build the records data from Fashion-MNIST, then train
# fusionTiny on image and metadata and its image-only baseline (metadata multiplied by 0) with
# the same data, seed and schedule; each run ends with its test accuracy.
set -euo pipefail
cd "$(dirname "$0")/../.."

bash build/debian-packages.sh dataset-fashion-mnist

dotnet build src/Dsl.Cli -c Release --nologo -v quiet
dsl="dotnet src/Dsl.Cli/bin/Release/net10.0/dsl.dll"

$dsl data fashion-metadata --out examples/fusion/data/metadata
$dsl check examples/fusion/fusion.dsl
for model in fusionTiny fusionTinyImageOnly; do
    start=$SECONDS
    # A rerun replaces the earlier run (dsl train refuses it otherwise).
    $dsl train examples/fusion/fusion.dsl --model "$model" --out "runs/$model" --overwrite "$@"
    echo "$model: training wall time $((SECONDS - start)) s"
done
