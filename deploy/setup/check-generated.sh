#!/usr/bin/env bash
# Regenerates the templ pages, the protobuf/gRPC code and the test API client
# (e2e/apiclient) into a temporary copy of their sources and fails when any
# committed output differs (or is missing), so generated code on main always
# matches its sources. Nothing in the work tree is
# written. Run from the repository root (go tool task check-generated).
set -euo pipefail
root=$(pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# templ: copy every .templ file, generate next to the copies, compare.
mapfile -t templs < <(find . -path ./data -prune -o -path ./tools -prune -o -name '*.templ' -print | sort)
tar -cf - "${templs[@]}" | tar -xf - -C "$tmp"
go tool -modfile=tools/go.mod templ generate -log-level error -path "$tmp"
status=0
for f in "${templs[@]}"; do
  gen="${f%.templ}_templ.go"
  if ! cmp -s "$tmp/$gen" "$gen"; then
    echo "stale or missing generated file: $gen (run: go tool task generate)"
    status=1
  fi
done

# protobuf: generate into a temporary output directory, compare.
(cd proto && go tool -modfile=../tools/go.mod buf generate -o "$tmp/proto")
while IFS= read -r gen; do
  rel="${gen#"$tmp"/}"
  if ! cmp -s "$gen" "$root/$rel"; then
    echo "stale or missing generated file: $rel (run: go tool task generate)"
    status=1
  fi
done < <(find "$tmp/proto" -name '*.pb.go' | sort)
# The test API client: generate from the committed OpenAPI document, compare.
# (The document itself is compared with the served one by the root package's
# TestOpenAPI_ClientSpecIsCurrent, which needs PostgreSQL.)
client=e2e/apiclient/client.gen.go
go tool -modfile=tools/go.mod oapi-codegen -config e2e/apiclient/oapi-codegen.yaml -o "$tmp/client.gen.go" e2e/apiclient/openapi.json
if ! cmp -s "$tmp/client.gen.go" "$client"; then
  echo "stale or missing generated file: $client (run: go tool task generate)"
  status=1
fi
exit $status
