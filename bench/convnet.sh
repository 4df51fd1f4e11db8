#!/usr/bin/env bash
# The DSL-compiled Fashion-MNIST convnet vs its hand-written TorchSharp twin, side by side in one
# process (alternating rounds), at batch 1 and 128: forward and train-step medians and ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
dotnet build bench/Dsl.Bench -c Release --nologo -v quiet
dotnet bench/Dsl.Bench/bin/Release/net10.0/Dsl.Bench.dll --compare examples/fashion/convnet.dsl --batches 1,128 --repeats 5 "$@"
