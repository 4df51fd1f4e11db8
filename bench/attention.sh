#!/usr/bin/env bash
# Composed vs fused multi-head self-attention: bench/attention.dsl's `main` experiment, which
# writes docs/attention-latency.{tsv,md}. Run it alone: other processes on the cores skew both
# sides unevenly.
set -euo pipefail
cd "$(dirname "$0")/.."
dotnet run --project src/Dsl.Cli -c Release -- run bench/attention.dsl "$@"
