#!/usr/bin/env bash
# CatLIP vs CLIP with the same image encoder (CatLIP, arXiv 2404.15653; apple/corenet projects/catlip): one epoch of each objective on
# captioned Fashion-MNIST (the CatLIP labels mined from the captions first), then a linear probe
# of both encoders' frozen features. Writes docs/catlip-probe.tsv. The training-step time
# comparison is bench/catlip.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."

bash build/debian-packages.sh dataset-fashion-mnist wordnet
dotnet build src/Dsl.Cli -c Release --nologo -v quiet
dsl="dotnet src/Dsl.Cli/bin/Release/net10.0/dsl.dll"
spec=examples/catlip/encoders.dsl
data=data/fashion-captions
out=${OUT:-runs/catlip}
mkdir -p "$out" docs

[ -f $data/train.jsonl ] || $dsl data fashion-captions --out $data
[ -f $data/train.catlip.jsonl ] || $dsl data catlip-labels $data/train.jsonl --out $data/train.catlip.jsonl --vocabulary-size 40
[ -f $data/test.catlip.jsonl ] || $dsl data catlip-labels $data/test.jsonl --out $data/test.catlip.jsonl --vocabulary $data/train.catlip.vocab.tsv
$dsl check $spec

json() { sed -n 's/.*"'"$1"'":\([0-9.eE+-]*\).*/\1/p'; }
for model in catlip clip; do
  start=$SECONDS
  $dsl train $spec --model $model --out "$out/$model" --overwrite
  echo "$model: trained in $((SECONDS - start)) s"
  $dsl eval $spec --model $model --checkpoint "$out/$model/checkpoint" --probe --json | tee "$out/$model/eval.json"
done
printf 'model\tlinear_probe\tzero_shot_top1\n' > docs/catlip-probe.tsv
for model in catlip clip; do
  printf '%s\t%s\t%s\n' $model "$(json linear_probe < "$out/$model/eval.json")" "$(json zero_shot_top1 < "$out/$model/eval.json")" >> docs/catlip-probe.tsv
done
cat docs/catlip-probe.tsv

echo "wrote docs/catlip-probe.tsv; the step-time comparison is bench/catlip.sh"
