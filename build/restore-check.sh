#!/usr/bin/env bash
# Proves that a locked restore cannot depend on what a machine's NuGet package folder holds.
#
# Why: every .NET SDK ships the FSharp.Core it bundles in its FSharp/library-packs folder, and
# that copy's bytes differ from the registry's copy of the same version. When the project pinned
# the bundled version, restore took whichever source answered first and a package folder kept
# whichever copy it got, so the lock files' hash failed (NU1403) on some machines. The project
# now pins an FSharp.Core that no installed SDK bundles (checked below), so only the registry can
# supply it. This script restores the solution in locked mode into package folders of its own:
# one empty, and for every FSharp.Core an installed SDK bundles, one pre-seeded with the SDK's
# copy and one with the registry's copy of that version.
set -euo pipefail
cd "$(dirname "$0")/.."

pinned=$(sed -n 's/.*Include="FSharp.Core" Version="\[\([^]]*\)\]".*/\1/p' Directory.Packages.props)
[ -n "$pinned" ] || { echo "restore-check: no exact FSharp.Core pin in Directory.Packages.props"; exit 1; }

bundled=()
while read -r version base; do
  sdk="${base#[}"; sdk="${sdk%]}/$version"
  for pkg in "$sdk"/FSharp/library-packs/FSharp.Core.*.nupkg; do
    [ -e "$pkg" ] || continue
    v=$(basename "$pkg" .nupkg); v=${v#FSharp.Core.}
    bundled+=("$v|$(dirname "$pkg")")
  done
done < <(dotnet --list-sdks)

for b in "${bundled[@]}"; do
  if [ "${b%%|*}" = "$pinned" ]; then
    echo "restore-check: FSharp.Core $pinned is bundled by an installed SDK (${b#*|});"
    echo "pin a version that only the registry supplies."
    exit 1
  fi
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Fills a package folder with one copy of FSharp.Core VERSION: from the SDK's library-packs
# folder, or (no folder given) from the configured registry.
seed() {
  local folder=$1 version=$2 source=${3:-}
  local proj="$work/seed-$RANDOM"
  mkdir -p "$proj"
  cat >"$proj/seed.csproj" <<EOF
<Project Sdk="Microsoft.NET.Sdk">
  <PropertyGroup><TargetFramework>net10.0</TargetFramework></PropertyGroup>
  <ItemGroup><PackageReference Include="FSharp.Core" Version="[$version]" /></ItemGroup>
</Project>
EOF
  if [ -n "$source" ]; then
    dotnet restore "$proj/seed.csproj" --packages "$folder" --source "$source" >/dev/null
  else
    dotnet restore "$proj/seed.csproj" --packages "$folder" >/dev/null
  fi
  [ -d "$folder/fsharp.core/$version" ] || { echo "restore-check: seeding $folder failed"; exit 1; }
}

restore_into() {
  local label=$1 folder=$2 start
  start=$(date +%s)
  if ! dotnet restore Dsl.sln --locked-mode --packages "$folder" >"$work/restore.log" 2>&1; then
    cat "$work/restore.log"
    echo "restore-check: locked restore into $label package folder failed"
    exit 1
  fi
  echo "restore-check: locked restore into $label package folder: ok ($(($(date +%s) - start)) s)"
  rm -rf "$folder"
}

restore_into "an empty" "$work/empty"
for b in "${bundled[@]}"; do
  v=${b%%|*}
  seed "$work/sdk-$v" "$v" "${b#*|}"
  restore_into "a (seeded with the SDK's FSharp.Core $v)" "$work/sdk-$v"
  seed "$work/registry-$v" "$v"
  restore_into "a (seeded with the registry's FSharp.Core $v)" "$work/registry-$v"
done
