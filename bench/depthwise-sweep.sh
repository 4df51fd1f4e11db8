#!/usr/bin/env bash
# The correctness sweep behind ConvolutionBackend's depthwise allowlist: libtorch's conv2d as it
# runs in this process (oneDNN) forward and backward against a float64 shifted-slices reference,
# over the allowed kernels, strides and paddings. The whole grid takes hours on 2 cores;
# `--every K` runs every K-th configuration (e.g. --every 400 for a ~20-second slice).
# Exit code 1 if any run is wrong; each wrong run is printed.
set -euo pipefail
cd "$(dirname "$0")/.."
dotnet build bench/Dsl.Bench -c Release --nologo -v quiet
dotnet bench/Dsl.Bench/bin/Release/net10.0/Dsl.Bench.dll --depthwise-sweep "$@"
