#!/usr/bin/env bash
# Smoke every model of a deployed stack through each server's client Service: waits for the
# rollout, port-forwards the Service, then `python -m model_tools smoke` per model (status of every
# version, metadata, REST and gRPC predicts). Exit non-zero on the first model that does not serve.
#   scripts/smoke-stack.sh STACK     (needs pulumi logged in to the stack's backend, kubectl, aws/gcloud)
set -euo pipefail
stack=${1:?usage: scripts/smoke-stack.sh STACK}
py=${PYTHON:-.venv/bin/python}
timeout=${ROLLOUT_TIMEOUT:-10m}
tmp=$(mktemp -d)
cleanup() {
  jobs -p | xargs -r kill 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

pulumi stack output kubeconfig --show-secrets --stack "$stack" >"$tmp/kubeconfig"
export KUBECONFIG="$tmp/kubeconfig"
namespace=$(pulumi stack output servingNamespace --stack "$stack")
pulumi stack output servingEndpoints --json --stack "$stack" >"$tmp/endpoints.json"

port=18500
while read -r server models; do
  # The stable Deployment is tfserving-<server>; the client Service of the same name is what callers use.
  kubectl -n "$namespace" rollout status "deployment/tfserving-$server" --timeout="$timeout"
  kubectl -n "$namespace" port-forward "svc/tfserving-$server" "$((port + 1)):8501" "$port:8500" >"$tmp/pf-$server.log" 2>&1 &
  for _ in $(seq 30); do
    if grep -q "Forwarding from" "$tmp/pf-$server.log"; then break; fi
    sleep 1
  done
  for model in $models; do
    echo "smoke: $stack $server $model"
    "$py" -m model_tools smoke --rest-url "http://localhost:$((port + 1))" --grpc-target "localhost:$port" \
      --model "$model"
  done
  port=$((port + 10))
done < <("$py" -c 'import json, sys
for server, ends in json.load(open(sys.argv[1])).items():
    print(server, " ".join(ends["models"]))' "$tmp/endpoints.json")
