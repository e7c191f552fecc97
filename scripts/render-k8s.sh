#!/usr/bin/env bash
# Renders aspirate-output/ with the operator's secrets into one file, k8s/deployment.yaml, for the runbook's
# `kubectl apply -f k8s/deployment.yaml` (the same objects as `kubectl apply -k aspirate-output`).
#
# Before: create each aspirate-output/<name>/.<name>.secrets from its <name>.secrets.example (git-ignored). This script
# refuses to render while one is missing, still holds a placeholder ("changeme..."), or gives a parameter a different
# value than another file does (the pods would then fail to log in to PostgreSQL or Redis).
#
# The output holds those secrets (base64, as in any Secret manifest): it is written with mode 0600, and k8s/ is
# git-ignored. Render again after `make k8s-generate` or a change of secrets.
#
# Usage: scripts/render-k8s.sh [--from DIR] [--out FILE]   (defaults: aspirate-output, k8s/deployment.yaml)
set -euo pipefail

from=aspirate-output
out=k8s/deployment.yaml
while [ $# -gt 0 ]; do
  case "$1" in
    --from) from="${2:?--from needs a folder}"; shift 2 ;;
    --out) out="${2:?--out needs a file}"; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "render-k8s: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

command -v kubectl >/dev/null || { echo "render-k8s: needs kubectl (1.27 or newer, for kubectl kustomize)" >&2; exit 1; }
[ -f "$from/kustomization.yaml" ] || { echo "render-k8s: $from has no kustomization.yaml (run from the repository root, or pass --from)" >&2; exit 2; }

problems=0
declare -A seen_value seen_file
while IFS= read -r -d '' example; do
  folder=$(dirname "$example")
  name=$(basename "$example" .secrets.example)
  secrets="$folder/.$name.secrets"
  if [ ! -f "$secrets" ]; then
    echo "render-k8s: missing $secrets: copy it from $example and replace the placeholders" >&2
    problems=1
    continue
  fi
  while IFS= read -r line || [ -n "$line" ]; do
    [[ -z "${line// /}" || "$line" == \#* ]] && continue
    key="${line%%=*}"
    value="${line#*=}"
    if [[ "$value" == changeme* ]]; then
      echo "render-k8s: $secrets: $key still has its placeholder value" >&2
      problems=1
    elif [ -n "${seen_value[$key]+x}" ] && [ "${seen_value[$key]}" != "$value" ]; then
      echo "render-k8s: $key differs between ${seen_file[$key]} and $secrets: it must be the same everywhere" >&2
      problems=1
    else
      seen_value[$key]="$value"
      seen_file[$key]="$secrets"
    fi
  done <"$secrets"
done < <(find "$from" -name '*.secrets.example' -print0 | sort -z)
[ "$problems" -eq 0 ] || exit 2

mkdir -p "$(dirname "$out")"
umask 077
tmp=$(mktemp "$(dirname "$out")/.render.XXXXXX")
trap 'rm -f "$tmp"' EXIT
{
  echo "# Rendered by scripts/render-k8s.sh from $from with its secrets: do not commit. kubectl apply -f $out"
  kubectl kustomize "$from"
} >"$tmp"
mv "$tmp" "$out"
trap - EXIT
echo "render-k8s: wrote $out ($(grep -c '^kind:' "$out") objects); apply it with: kubectl apply -f $out"
