#!/usr/bin/env bash
# Greedy generation from a small byte-level decoder (bench/generate.dsl, random weights) on this
# machine's cores: tokens/s with the KV cache against running the whole sequence for every new
# token, timed in alternating rounds in one process; 63 and 255 new tokens after a 1-token prompt.
set -euo pipefail
cd "$(dirname "$0")/.."
dotnet build src/Dsl.Cli -c Release --nologo -v quiet
dsl="dotnet src/Dsl.Cli/bin/Release/net10.0/dsl.dll"
for tokens in 63 255; do
  $dsl bench bench/generate.dsl --generate "$tokens" --rounds "${ROUNDS:-7}" "$@"
done
