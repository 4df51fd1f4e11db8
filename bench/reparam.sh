#!/usr/bin/env bash
# FastViT-T8 and MCi0 at 256×256 and MobileOne-S0 at 224×224, batch 1 and 16, on this machine's cores: forward latency of the
# train (multi-branch) form vs the re-parameterised deploy form, timed side by side in one process.
set -euo pipefail
cd "$(dirname "$0")/.."
dotnet build src/Dsl.Cli -c Release --nologo -v quiet
dsl="dotnet src/Dsl.Cli/bin/Release/net10.0/dsl.dll"
for model in fastvitT8 mci0 mobileoneS0; do
  for batch in 1 16; do
    $dsl bench examples/fastvit/models.dsl --model "$model" --batch "$batch" --reparam --rounds "${ROUNDS:-6}" --repeats "${REPEATS:-3}" "$@"
  done
done
