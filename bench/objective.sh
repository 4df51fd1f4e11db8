#!/usr/bin/env bash
# The cost of training through the language's objectives: the Fashion-MNIST convnet's training
# step with its `crossEntropy` as the prelude's objective graph vs F.cross_entropy called directly
# (the host ClassificationTask it replaced), alternating rounds in one process, batch 1 and 128.
set -euo pipefail
cd "$(dirname "$0")/.."
dotnet build bench/Dsl.Bench -c Release --nologo -v quiet
dotnet bench/Dsl.Bench/bin/Release/net10.0/Dsl.Bench.dll --objective examples/fashion/convnet.dsl --batches 1,128 --repeats 5 "$@"
