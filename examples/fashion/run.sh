#!/usr/bin/env bash
# The main job end to end on a fresh Debian/Ubuntu machine with the .NET 10 SDK: install the
# Fashion-MNIST package if it is missing, build, train the example and evaluate its checkpoint.
set -euo pipefail
cd "$(dirname "$0")/../.."

bash build/debian-packages.sh dataset-fashion-mnist

dotnet build src/Dsl.Cli -c Release --nologo -v quiet
dsl="dotnet src/Dsl.Cli/bin/Release/net10.0/dsl.dll"
out=${OUT:-runs/fashion}

$dsl check examples/fashion/convnet.dsl
start=$SECONDS
# A rerun replaces the earlier run (dsl train refuses it otherwise), unless it resumes it.
again=--overwrite; for a in "$@"; do [ "$a" = --resume ] && again=; done
$dsl train examples/fashion/convnet.dsl --out "$out" $again "$@"
echo "training wall time: $((SECONDS - start)) s"
$dsl eval examples/fashion/convnet.dsl --checkpoint "$out/checkpoint" --json
