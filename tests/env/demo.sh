#!/usr/bin/env bash
# Runs the operator end to end on this machine: starts the local control plane and the Key
# Vault emulator (tests/env/testenv.sh), installs the CRD, runs the operator, applies
# examples/ (pointed at the emulator) and shows `kubectl get vaultkeys`. Everything stops on exit.
#   tests/env/demo.sh            run the demo and tear down
#   tests/env/demo.sh --keep     keep the environment's folder (logs, kubeconfig) afterwards
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"
cargo build --quiet --bin vaultkey-operator

if [[ -z "${VAULTKEY_TEST_ENV_DIR:-}" ]]; then
  exec tests/env/testenv.sh run "$@" -- "$0"
fi

# Inside the environment (env.sh sourced by testenv.sh).
ns=demo
kubectl create namespace "$ns" >/dev/null
target/debug/vaultkey-operator run --namespace "$ns" --metrics-addr 127.0.0.1:0 --resync-seconds 30 \
  --emulator-ca-file "$VAULTKEY_TEST_VAULT_CA" --emulator-static-token demo \
  --emulator-skip-challenge-resource-check >"$VAULTKEY_TEST_ENV_DIR/logs/operator.log" 2>&1 &
operator=$!
trap 'kill "$operator" 2>/dev/null || true' EXIT

for manifest in examples/*.yaml; do
  sed "s#https://my-vault.vault.azure.net#$VAULTKEY_TEST_VAULT_URL#" "$manifest" | kubectl apply -n "$ns" -f -
done
kubectl wait -n "$ns" --for=condition=Ready vaultkey --all --timeout=60s
echo
kubectl get vaultkeys -n "$ns"
echo
kubectl describe vaultkey -n "$ns" howto-rsa | sed -n '/^Status:/,$p'
