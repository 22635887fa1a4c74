# What bench/sync/run and bench/sync/flux share: the objects they apply and how they measure.
# Sourced; expects $repo, and N, NAMESPACES and SERVICES for manifests (REPLICAS: the
# Deployments' replicas, 2 unless set).

# shellcheck source=../lib.sh
. "$repo/bench/lib.sh"

# manifests DIR PREFIX: the Namespaces PREFIX-0 .. PREFIX-(NAMESPACES-1) and N objects spread
# over them (a third each of Deployments, Services and ConfigMaps; SERVICES=0: half each of
# Deployments and ConfigMaps).
manifests() {
	local dir=$1 prefix=$2 i ns
	mkdir -p "$dir"
	for ((i = 0; i < NAMESPACES; i++)); do
		printf -- '---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: %s-%d\n' "$prefix" "$i"
	done >"$dir/00-namespaces.yaml"
	for ((i = 0; i < N; i++)); do
		ns=$prefix-$((i % NAMESPACES))
		case $(( SERVICES ? i % 3 : (i % 2) * 2 )) in
		0) cat <<EOF
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: app-$i
  namespace: $ns
  labels: {app: app-$i}
spec:
  replicas: ${REPLICAS:-2}
  selector:
    matchLabels: {app: app-$i}
  template:
    metadata:
      labels: {app: app-$i}
    spec:
      containers:
      - name: app
        image: registry.example/app:1.$i
        ports: [{containerPort: 8080}]
        resources: {requests: {cpu: 10m, memory: 32Mi}}
EOF
		;;
		1) cat <<EOF
---
apiVersion: v1
kind: Service
metadata:
  name: app-$i
  namespace: $ns
spec:
  selector: {app: app-$((i - 1))}
  ports: [{port: 80, targetPort: 8080}]
EOF
		;;
		2) cat <<EOF
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: app-$i
  namespace: $ns
data:
  settings.yaml: |
    name: app-$i
    replicas: 2
    feature: enabled
EOF
		;;
		esac
	done >"$dir/10-apps.yaml"
}

# server_cpu: CPU seconds the stack's kube-apiserver and etcd have used so far (0 when the
# stack's pid file is not there).
server_cpu() {
	local pids=${LATCH_STACK_DIR:-$repo/.stack}/pids
	[[ -f $pids ]] || { echo 0; return; }
	# shellcheck disable=SC2046 # one word per pid
	cpu_seconds $(awk '$1 == "kube-apiserver" || $1 == "etcd" { print $2 }' "$pids")
}

