#!/usr/bin/env bash
# Smoke test for the binaries that scripts/build-kube makes: starts etcd and
# kube-apiserver on loopback with freshly generated certificates, waits for
# /readyz, then runs `kubectl get ns` and applies a NetworkPolicy. Stops
# everything it started on exit, whatever happens.
#
#   tools/kube/smoke.sh            # builds (or reuses) the binaries first
#   KUBE_BIN=/path/to/bin tools/kube/smoke.sh
#   KEEP=1 tools/kube/smoke.sh     # keep the work dir (certs, logs) for reading
#
# Ports (loopback only) can be moved with ETCD_PORT, ETCD_PEER_PORT, API_PORT.
set -euo pipefail
cd "$(dirname "$0")/../.."

KUBE_BIN=${KUBE_BIN:-$(scripts/build-kube | tail -n1)}
ETCD_PORT=${ETCD_PORT:-23790}
ETCD_PEER_PORT=${ETCD_PEER_PORT:-23800}
API_PORT=${API_PORT:-64430}
W=$(mktemp -d /tmp/nftpolicy-kube-smoke.XXXXXX)
pids=()

cleanup() {
  local rc=$? p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ "$rc" != 0 ]; then
    echo "smoke: FAILED (rc=$rc); last log lines:" >&2
    tail -n 20 "$W"/etcd.log "$W"/apiserver.log >&2 2>/dev/null || true
  fi
  if [ -n "${KEEP:-}" ]; then echo "smoke: work dir kept: $W" >&2; else rm -rf "$W"; fi
}
trap cleanup EXIT

# --- certificates: a CA, a serving cert for 127.0.0.1, an admin client cert
# (group system:masters) and the service-account key pair.
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=nftpolicy-smoke-ca \
  -keyout "$W/ca.key" -out "$W/ca.crt" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj /CN=kube-apiserver \
  -keyout "$W/apiserver.key" -out "$W/apiserver.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,IP:10.96.0.1\nextendedKeyUsage=serverAuth\n' >"$W/apiserver.ext"
openssl x509 -req -in "$W/apiserver.csr" -CA "$W/ca.crt" -CAkey "$W/ca.key" -CAcreateserial \
  -days 2 -extfile "$W/apiserver.ext" -out "$W/apiserver.crt" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/O=system:masters/CN=smoke-admin" \
  -keyout "$W/admin.key" -out "$W/admin.csr" 2>/dev/null
printf 'extendedKeyUsage=clientAuth\n' >"$W/admin.ext"
openssl x509 -req -in "$W/admin.csr" -CA "$W/ca.crt" -CAkey "$W/ca.key" -CAcreateserial \
  -days 2 -extfile "$W/admin.ext" -out "$W/admin.crt" 2>/dev/null
openssl genrsa -out "$W/sa.key" 2048 2>/dev/null
openssl rsa -in "$W/sa.key" -pubout -out "$W/sa.pub" 2>/dev/null
# A static bearer token as well, for clients that would rather not hold certs.
TOKEN=$(openssl rand -hex 16)
echo "$TOKEN,smoke-token-admin,smoke-token-admin,system:masters" >"$W/tokens.csv"

# --- etcd
"$KUBE_BIN/etcd" --name smoke --data-dir "$W/etcd" \
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster "smoke=http://127.0.0.1:$ETCD_PEER_PORT" \
  --listen-metrics-urls "" \
  >"$W/etcd.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  curl -fsS "http://127.0.0.1:$ETCD_PORT/health" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fsS "http://127.0.0.1:$ETCD_PORT/health" >/dev/null
echo "smoke: etcd healthy after ${SECONDS}s" >&2

# --- kube-apiserver
"$KUBE_BIN/kube-apiserver" \
  --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
  --bind-address 127.0.0.1 --secure-port "$API_PORT" \
  --advertise-address 127.0.0.1 --endpoint-reconciler-type none \
  --tls-cert-file "$W/apiserver.crt" --tls-private-key-file "$W/apiserver.key" \
  --client-ca-file "$W/ca.crt" \
  --token-auth-file "$W/tokens.csv" \
  --service-account-issuer https://kubernetes.default.svc \
  --service-account-key-file "$W/sa.pub" \
  --service-account-signing-key-file "$W/sa.key" \
  --authorization-mode RBAC \
  --service-cluster-ip-range 10.96.0.0/16 \
  --cert-dir "$W/apiserver-certs" \
  >"$W/apiserver.log" 2>&1 &
pids+=($!)
for _ in $(seq 600); do
  kill -0 "${pids[-1]}" 2>/dev/null || { echo "smoke: kube-apiserver exited" >&2; exit 1; }
  curl -fsS --cacert "$W/ca.crt" -H "Authorization: Bearer $TOKEN" \
    "https://127.0.0.1:$API_PORT/readyz" >/dev/null 2>&1 && break
  sleep 0.2
done
curl -fsS --cacert "$W/ca.crt" -H "Authorization: Bearer $TOKEN" "https://127.0.0.1:$API_PORT/readyz" >/dev/null
echo "smoke: kube-apiserver ready after ${SECONDS}s" >&2

# --- kubectl, with the client-cert admin
K="$W/kubeconfig"
"$KUBE_BIN/kubectl" config --kubeconfig "$K" set-cluster smoke \
  --server "https://127.0.0.1:$API_PORT" --certificate-authority "$W/ca.crt" --embed-certs >/dev/null
"$KUBE_BIN/kubectl" config --kubeconfig "$K" set-credentials admin \
  --client-certificate "$W/admin.crt" --client-key "$W/admin.key" --embed-certs >/dev/null
"$KUBE_BIN/kubectl" config --kubeconfig "$K" set-context smoke --cluster smoke --user admin >/dev/null
"$KUBE_BIN/kubectl" config --kubeconfig "$K" use-context smoke >/dev/null

"$KUBE_BIN/kubectl" --kubeconfig "$K" version
"$KUBE_BIN/kubectl" --kubeconfig "$K" get ns
"$KUBE_BIN/kubectl" --kubeconfig "$K" create namespace smoke
"$KUBE_BIN/kubectl" --kubeconfig "$K" apply -f - <<'EOF'
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-web-from-frontend
  namespace: smoke
spec:
  podSelector:
    matchLabels: {app: web}
  policyTypes: [Ingress]
  ingress:
  - from:
    - podSelector:
        matchLabels: {role: frontend}
    ports:
    - {protocol: TCP, port: 80}
EOF
"$KUBE_BIN/kubectl" --kubeconfig "$K" get networkpolicy -n smoke -o wide
# The static token works too.
"$KUBE_BIN/kubectl" --server "https://127.0.0.1:$API_PORT" --certificate-authority "$W/ca.crt" \
  --token "$TOKEN" auth whoami
echo "smoke: OK in ${SECONDS}s" >&2
