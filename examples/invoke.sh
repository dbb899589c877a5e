#!/usr/bin/env bash
# Saved flows and the invocation dialects, end to end with curl, against a
# running `pipewell dev --auth required` (or plain `make dev`: keys are then
# not asked for, and every flow belongs to the tenant "default").
#   examples/invoke.sh [http://127.0.0.1:1234] [DATA_DIR]
# Uses $PIPEWELL_API_KEY (the variable the pipewell CLI reads) when set;
# otherwise creates a key with the CLI in DATA_DIR (the service's data
# directory: default $PIPEWELL_DATA_DIR, else .pipewell, as `pipewell dev`).
set -euo pipefail
base=${1:-http://127.0.0.1:1234}
data_dir=${2:-${PIPEWELL_DATA_DIR:-.pipewell}}
here=$(cd "$(dirname "$0")" && pwd)
pipewell=${PIPEWELL:-$here/../.venv/bin/pipewell}
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
step() { printf '\n== %s\n' "$*"; }

# $PIPEWELL_KEY is the name this script read before it took the CLI's: still
# honoured when PIPEWELL_API_KEY is not set, so existing set-ups keep working.
PIPEWELL_API_KEY=${PIPEWELL_API_KEY:-${PIPEWELL_KEY:-}}
if [ -z "$PIPEWELL_API_KEY" ]; then
  step "create an API key (printed once; only its SHA-256 is stored)"
  PIPEWELL_API_KEY=$("$pipewell" keys create --name "walkthrough-$(date +%s)" --tenant demo \
    --data-dir "$data_dir")
fi
auth=(-H "Authorization: Bearer $PIPEWELL_API_KEY")

step "save the flow: POST /api/v1/flows (YAML)"
saved=$(curl -sS -X POST "$base/api/v1/flows" "${auth[@]}" \
  -H 'Content-Type: application/yaml' --data-binary @"$here/greeter.yaml")
echo "$saved"
graph_id=$(json 'd["graph_id"]' <<<"$saved")
flow_id=$(json 'd["id"]' <<<"$saved")

step "a config profile: PUT /api/v1/flows/$graph_id/configs/formal"
curl -sS -X PUT "$base/api/v1/flows/$graph_id/configs/formal" "${auth[@]}" \
  -H 'Content-Type: application/json' -d '{"flags": {"greet": {"greeting": "Good day"}}}'
echo

step "Axiom: invoke and wait"
curl -sS -X POST "$base/invocations/v1/flows/invoke" "${auth[@]}" \
  -H 'Content-Type: application/json' \
  -d "{\"graph_id\": \"$graph_id\", \"input\": {\"text\": \"hello\"}, \"wait\": true}"
echo

step "Axiom: invoke with the config profile, without waiting"
started=$(curl -sS -X POST "$base/invocations/v1/flows/invoke" "${auth[@]}" \
  -H 'Content-Type: application/json' \
  -d "{\"graph_id\": \"$graph_id\", \"input\": {\"text\": \"hi\"}, \"config_id\": \"formal\"}")
echo "$started"
execution_id=$(json 'd["execution_id"]' <<<"$started")
sleep 2
curl -sS "$base/api/v1/flow/artifact/$execution_id/reply" "${auth[@]}"
echo

step "Axiom: stream (SSE frames)"
curl -sS -N -X POST "$base/invocations/v1/flows/invoke/stream" "${auth[@]}" \
  -H 'Content-Type: application/json' \
  -d "{\"graph_id\": \"$graph_id\", \"input\": {\"text\": \"streamed\"}}"

step "xpander: invoke by name (x-api-key)"
curl -sS -X POST "$base/v1/workflows/greeter/invoke" -H "x-api-key: $PIPEWELL_API_KEY" \
  -H 'Content-Type: application/json' -d '{"input": {"text": "from xpander"}}'
echo

step "xpander: stream, ending with task_finished"
curl -sS -N -X POST "$base/v1/workflows/greeter/invoke/stream" -H "x-api-key: $PIPEWELL_API_KEY" \
  -H 'Content-Type: application/json' -d '{"input": {"text": "streamed"}}' | cut -c1-160

step "Scade: execute flow $flow_id (Basic KEY), then poll the task"
task=$(curl -sS -X POST "$base/api/v1/scade/flow/$flow_id/execute" \
  -H "Authorization: Basic $PIPEWELL_API_KEY" -H 'Content-Type: application/json' \
  -d '{"start_node_id": "greet", "end_node_id": "greet", "result_node_id": "greet",
       "node_settings": {"greet": {"data": {"source": "video.mp4"}}}}')
echo "$task"
task_id=$(json 'd["id"]' <<<"$task")
while :; do
  task=$(curl -sS "$base/api/v1/task/$task_id" -H "Authorization: Basic $PIPEWELL_API_KEY")
  case $(json 'd["status"]' <<<"$task") in 3|4) break ;; esac
  sleep 1
done
echo "$task"

step "Langflow: run with tweaks"
curl -sS -X POST "$base/api/v1/run/$graph_id" -H "x-api-key: $PIPEWELL_API_KEY" \
  -H 'Content-Type: application/json' \
  -d '{"input_value": "Tell me", "session_id": "chat-123",
       "tweaks": {"greet": {"greeting": "Sure!"}}}'
echo

step "Langflow: run?stream=true"
curl -sS -N -X POST "$base/api/v1/run/$graph_id?stream=true" -H "x-api-key: $PIPEWELL_API_KEY" \
  -H 'Content-Type: application/json' -d '{"message": "stream it", "session_id": "chat-123"}' \
  | cut -c1-160

step "Langflow: webhook"
curl -sS -X POST "$base/api/v1/webhook/$graph_id" -H "x-api-key: $PIPEWELL_API_KEY" \
  -H 'Content-Type: application/json' -d '{"data": "example-data"}'
echo
