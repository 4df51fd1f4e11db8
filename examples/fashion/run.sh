#!/usr/bin/env bash
# The main job end to end on a fresh Debian/Ubuntu machine with the .NET 10 SDK: install the
# Fashion-MNIST package if it is missing, then build the CLI and run the file's `main`
# experiment (train, evaluate the checkpoint, write docs/fashion-accuracy.{tsv,md}). Everything
# after the package install is `dsl run`; a rerun finds the stages done and costs nothing.
set -euo pipefail
cd "$(dirname "$0")/../.."

bash build/debian-packages.sh dataset-fashion-mnist fonts-dejavu-core

dotnet run --project src/Dsl.Cli -c Release -- run examples/fashion/convnet.dsl --experiment main "$@"
