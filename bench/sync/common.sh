# What bench/sync/run, bench/sync/scale and bench/sync/flux share: the objects they apply and
# how they measure.
# Sourced; expects $repo, and N, NAMESPACES and SERVICES for manifests (REPLICAS: the
# Deployments' replicas, 2 unless set).

# shellcheck source=../lib.sh
. "$repo/bench/lib.sh"

# manifests DIR PREFIX: the Namespaces PREFIX-0 .. PREFIX-(NAMESPACES-1) and N objects spread
# over them (a third each of Deployments, Services and ConfigMaps; SERVICES=0: half each of
# Deployments and ConfigMaps).
manifests() {
	local dir=$1 prefix=$2
	mkdir -p "$dir"
	awk -v prefix="$prefix" -v namespaces="$NAMESPACES" 'BEGIN {
		for (i = 0; i < namespaces; i++)
			printf "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: %s-%d\n", prefix, i
	}' >"$dir/00-namespaces.yaml"
	# One awk process: a shell loop with a heredoc per object took a minute at 10,000.
	awk -v n="$N" -v prefix="$prefix" -v namespaces="$NAMESPACES" -v services="$SERVICES" \
		-v replicas="${REPLICAS:-2}" 'BEGIN {
		for (i = 0; i < n; i++) {
			ns = prefix "-" (i % namespaces)
			what = services ? i % 3 : (i % 2) * 2
			if (what == 0) {
				printf "---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: app-%d\n", i
				printf "  namespace: %s\n  labels: {app: app-%d}\nspec:\n  replicas: %s\n", ns, i, replicas
				printf "  selector:\n    matchLabels: {app: app-%d}\n  template:\n    metadata:\n", i
				printf "      labels: {app: app-%d}\n    spec:\n      containers:\n      - name: app\n", i
				printf "        image: registry.example/app:1.%d\n        ports: [{containerPort: 8080}]\n", i
				printf "        resources: {requests: {cpu: 10m, memory: 32Mi}}\n"
			} else if (what == 1) {
				printf "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: app-%d\n  namespace: %s\n", i, ns
				printf "spec:\n  selector: {app: app-%d}\n  ports: [{port: 80, targetPort: 8080}]\n", i - 1
			} else {
				printf "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app-%d\n  namespace: %s\n", i, ns
				printf "data:\n  settings.yaml: |\n    name: app-%d\n    replicas: 2\n    feature: enabled\n", i
			}
		}
	}' >"$dir/10-apps.yaml"
}

# server_cpu: CPU seconds the stack's kube-apiserver and etcd have used so far (0 when the
# stack's pid file is not there).
server_cpu() {
	local pids=${LATCH_STACK_DIR:-$repo/.stack}/pids
	[[ -f $pids ]] || { echo 0; return; }
	# shellcheck disable=SC2046 # one word per pid
	cpu_seconds $(awk '$1 == "kube-apiserver" || $1 == "etcd" { print $2 }' "$pids")
}

# timed OUT -- CMD...: run CMD; OUT gets "<seconds> <peak RSS KiB>".
timed() {
	local out=$1
	shift 2
	/usr/bin/time -f "%e %M %U %S" -o "$out" "$@" >"$out.log" 2>&1 || { echo "bench: failed: $*" >&2; tail -n 20 "$out.log" >&2; exit 1; }
}

# timed_with_server OUT -- CMD...: timed, and OUT.server gets the server CPU seconds it cost.
timed_with_server() {
	local out=$1 before
	before=$(server_cpu)
	timed "$@"
	awk -v a="$before" -v b="$(server_cpu)" 'BEGIN { printf "%.2f\n", b - a }' >"$out.server"
}

# floor_configs DIR: curl configs that server-side apply every object of DIR's manifests, the
# Namespaces (DIR.ns) apart from the rest (DIR.obj), each object from its own file; DIR.obj-dry
# does the same as a dry run.
floor_configs() {
	local dir=$1
	awk -v dir="$dir" -v base="$LATCH_KUBE_URL" -v ca="$LATCH_STACK_CA" -v cert="$LATCH_STACK_DIR/pki/admin.crt" \
		-v key="$LATCH_STACK_DIR/pki/admin.key" '
		function block(conf, url, file) {
			if (conf in started) print "next" >> conf
			started[conf] = 1
			printf "url = \"%s\"\nrequest = \"PATCH\"\nheader = \"Content-Type: application/apply-patch+yaml\"\n", url >> conf
			printf "data-binary = \"@%s\"\ncacert = \"%s\"\ncert = \"%s\"\nkey = \"%s\"\n", file, ca, cert, key >> conf
			printf "output = \"/dev/null\"\nwrite-out = \"%%{http_code}\\n\"\n" >> conf
		}
		function flush(   path, file, conf) {
			if (kind == "") return
			if (kind == "Namespace") path = "/api/v1/namespaces/" name
			else if (kind == "Deployment") path = "/apis/apps/v1/namespaces/" ns "/deployments/" name
			else path = "/api/v1/namespaces/" ns "/" tolower(kind) "s/" name
			file = sprintf("%s.objects/%d.yaml", dir, n++)
			printf "%s", doc > file
			close(file)
			conf = dir (kind == "Namespace" ? ".ns" : ".obj")
			block(conf, base path "?fieldManager=floor&force=true", file)
			if (kind != "Namespace") block(conf "-dry", base path "?fieldManager=floor&force=true&dryRun=All", file)
		}
		/^---$/ { flush(); doc = ""; kind = ""; name = ""; ns = ""; next }
		{ doc = doc $0 "\n" }
		/^kind: / { kind = $2 }
		/^  name: / && name == "" { name = $2 }
		/^  namespace: / { ns = $2 }
		END { flush() }' "$dir"/*.yaml
}

# floor_apply DIR [dry]: the Namespaces, then every object, 8 at a time (with dry: a dry run of
# every object between the two, as latch-sync creates new Namespaces before its dry run);
# fails unless every answer is 200 or 201.
floor_apply() {
	local dir=$1 conf
	local confs=("$dir.ns" "$dir.obj")
	[[ ${2:-} == dry ]] && confs=("$dir.ns" "$dir.obj-dry" "$dir.obj")
	for conf in "${confs[@]}"; do
		curl --parallel --parallel-max 8 -sS -K "$conf" >"$conf.codes" || return 1
		! grep -qv '^20[01]$' "$conf.codes" || { echo "bench: the floor got $(grep -v '^20[01]$' "$conf.codes" | sort | uniq -c | head -3)" >&2; return 1; }
	done
}
export -f floor_apply
