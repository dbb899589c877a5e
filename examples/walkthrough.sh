#!/usr/bin/env bash
# The seed example end to end against a running `make dev`:
# submit, upload an image with curl, wait, download the resized image.
#   examples/walkthrough.sh path/to/photo.png [http://127.0.0.1:1234]
# With `--auth required`, give the key in $PIPEWELL_API_KEY (as to the CLI).
set -euo pipefail
image=${1:?usage: $0 IMAGE [BASE_URL]}
base=${2:-http://127.0.0.1:1234}
here=$(cd "$(dirname "$0")" && pwd)
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
auth=()
if [ -n "${PIPEWELL_API_KEY:-}" ]; then auth=(-H "Authorization: Bearer $PIPEWELL_API_KEY"); fi

run=$(curl -sS -X POST "$base/api/v1/flow/test" "${auth[@]}" \
  -H 'Content-Type: application/json' -d @"$here/resize.json")
run_id=$(json 'd["ID"]' <<<"$run")
put_url=$(json 'd["WaitingURLs"][0]["PutURL"]' <<<"$run")
echo "run $run_id is waiting for input-image"

curl -sS -T "$image" "$put_url" >/dev/null
echo "uploaded $image"

# Every status a run ends in: a run cancelled (STOPPED) is as finished as a failed one.
while :; do
  status=$(curl -sS "$base/api/v1/flow/status/$run_id" "${auth[@]}" | json 'd["Status"]')
  echo "status: $status"
  case $status in COMPLETE|ERROR|STOPPED) break ;; esac
  sleep 1
done
curl -sS "$base/api/v1/flow/status/$run_id" "${auth[@]}" | python3 -m json.tool
if [ "$status" = COMPLETE ]; then
  out="resized-$(basename "$image")"
  curl -sS -o "$out" "$base/api/v1/flow/artifact/$run_id/output-image" "${auth[@]}"
  echo "wrote $out"
fi
