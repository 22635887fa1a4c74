# Thin wrapper over meson and dev/ for the commands README.md names.
BUILD ?= build
SAN_BUILD ?= build-sanitize
STATIC_BUILD ?= build-static
LATCH_INIT_STATIC := $(abspath $(STATIC_BUILD)/init/latch-init)
export PATH := $(PATH):/usr/local/go/bin

# The e2e suites and benchmarks run inside the stack's network namespace (dev/stack exec).
IN_STACK := dev/stack exec

.PHONY: all deps build static images sanitize-build fuzz bench-init bench-node bench-inject bench-sync bench-sync-replicas bench-flux lint unit sanitize e2e test demo stack-up stack-down clean

all: build

deps:
	dev/install-deps

$(BUILD)/build.ninja:
	meson setup $(BUILD) -Dwerror=true

build: $(BUILD)/build.ninja
	ninja -C $(BUILD)

# latch-init fully static (glibc, OpenSSL, a minimal libcurl built from Debian's source).
static:
	[ -f $(STATIC_BUILD)/build.ninja ] || meson setup $(STATIC_BUILD) -Dpkg_config_path=$$(dev/build-static-curl) \
		-Dstatic=true -Dwerror=true --buildtype=minsize -Db_pie=false -Dstrip=true
	ninja -C $(STATIC_BUILD) init/latch-init
	@ls -l $(LATCH_INIT_STATIC)

# The OCI images the stack's node runs (latch-init, latch-sync, pause, busybox, nginx, psql),
# as OCI layout tars in $(BUILD)/images, with no container daemon or registry.
images: build static
	dev/build-images $(BUILD)/images

# Banned functions, line length, cppcheck and clang-tidy (dev/lint says what each checks); it
# reads the compile commands of $(BUILD).
lint: $(BUILD)/build.ninja
	dev/lint $(BUILD)

unit: build
	meson test -C $(BUILD) --suite unit --print-errorlogs

# The unit suite again under AddressSanitizer and UndefinedBehaviorSanitizer; any report fails.
sanitize-build:
	[ -f $(SAN_BUILD)/build.ninja ] || meson setup $(SAN_BUILD) -Dwerror=true -Db_sanitize=address,undefined -Db_lundef=false
	ninja -C $(SAN_BUILD)

sanitize: sanitize-build
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
		meson test -C $(SAN_BUILD) --suite unit --print-errorlogs

# e2e against the real stack. A stack the user started (make demo) is restarted, so the
# suites start from a clean one, and left running; one started here is taken down again.
# The suite runs twice: with the plain build, and with the ASan/UBSan/LSan build (a report
# fails it); then dev/secret-audit looks for every token and secret value Vault issued in
# the logs, the cluster and the latch processes left.
e2e: build static sanitize-build
	was_up=0; dev/stack status >/dev/null 2>&1 && was_up=1; \
	dev/stack up || exit 1; \
	rm -rf $(BUILD)/test-artifacts/logs $(SAN_BUILD)/test-artifacts/logs; \
	status=0; . .stack/env && export LATCH_INIT_STATIC=$(LATCH_INIT_STATIC) && \
		$(IN_STACK) meson test -C $(BUILD) --suite e2e --print-errorlogs && \
		ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
		UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 LSAN_OPTIONS=suppressions=$(abspath tests/lsan.supp) \
		$(IN_STACK) meson test -C $(SAN_BUILD) --suite e2e --print-errorlogs && \
		$(IN_STACK) dev/secret-audit $(BUILD) $(SAN_BUILD) || status=$$?; \
	if [ $$was_up = 1 ]; then echo "e2e: the stack you started stays up (dev/stack down stops it)"; \
	else dev/stack down; fi; exit $$status

test: deps
	$(MAKE) lint
	$(MAKE) unit
	$(MAKE) sanitize
	$(MAKE) e2e

# Coverage-guided fuzzing of every parser for FUZZ_SECONDS each (clang and libFuzzer from
# Debian: clang-14, libfuzzer-14-dev). New inputs go to build-fuzz/corpus; crashes stop it.
FUZZ_SECONDS ?= 60
FUZZ_HARNESSES ?= yaml json template config inject dotenv jwt sshsig syncconfig webhook gitpath vault k8s kubeconfig
fuzz:
	[ -f build-fuzz/build.ninja ] || CC=clang-14 meson setup build-fuzz -Dfuzzing=true \
		-Db_sanitize=address,undefined -Db_lundef=false
	ninja -C build-fuzz
	for h in $(FUZZ_HARNESSES); do \
		mkdir -p build-fuzz/corpus/$$h && cp -n tests/fuzz/corpus/$$h/* build-fuzz/corpus/$$h/; \
		build-fuzz/tests/fuzz/fuzz_$$h -max_total_time=$(FUZZ_SECONDS) -max_len=65536 \
			-artifact_prefix=build-fuzz/crash-$$h- build-fuzz/corpus/$$h || exit 1; \
	done

# latch-init versus vault agent and versus the floor (the same requests by the leanest client),
# side by side (numbers go in README.md).
bench-init: build static
	ninja -C $(STATIC_BUILD) bench/init/latch-init-floor
	dev/stack up
	status=0; . .stack/env && LATCH_INIT_STATIC=$(LATCH_INIT_STATIC) $(IN_STACK) bench/init/run || status=$$?; \
		dev/stack down; exit $$status

# Pod start and pod memory on the stack's node: latch-init versus Vault Agent as an init
# container, with no-init and no-op-init baselines (numbers go in README.md).
bench-node: build static
	LATCH_EXTRA_IMAGES=vault dev/stack up
	status=0; . .stack/env && $(IN_STACK) bench/node/run || status=$$?; \
		dev/stack down; exit $$status

# latch-inject versus kustomize with an equivalent patch and the libyaml floor, and its scale
# curves (bench/results/inject-scale-*.png) (numbers go in README.md).
bench-inject: build
	bench/inject/run

# latch-sync versus kubectl apply --server-side and the server's floor, versus Flux with its
# defaults on one source (builds the two Flux controllers first: about 15 min cold), then its
# scale curves (bench/results/sync-scale-*.png); the last line is RESULT sync (numbers go in
# README.md).
bench-sync: build
	dev/build-servers source-controller kustomize-controller >/dev/null
	dev/stack up
	mkdir -p bench/results && touch bench/results/.bench-sync-started
	status=0; . .stack/env && $(IN_STACK) bench/sync/run && $(IN_STACK) bench/sync/flux && \
		$(IN_STACK) bench/sync/scale && bench/sync/result bench/results/.bench-sync-started || status=$$?; \
		dev/stack down; exit $$status

# latch-sync versus Flux v1.9.6 on the same repository (numbers go in README.md): 1,000 objects
# (Deployments and ConfigMaps) in one source with Flux's defaults, then with its API client
# limits raised, then in 100 sources of 10. Builds the two Flux controllers first (about 15 min
# cold; bench only, never `make test`).
bench-flux: build
	dev/build-servers source-controller kustomize-controller >/dev/null
	dev/stack up
	status=0; . .stack/env && $(IN_STACK) bench/sync/flux && \
		FLUX_ARGS="--kube-api-qps=500 --kube-api-burst=1000" $(IN_STACK) bench/sync/flux && \
		SOURCES=100 $(IN_STACK) bench/sync/flux || status=$$?; \
		dev/stack down; exit $$status

# latch-sync replicas sharing 100 sources by Leases: 1, 2 and 3 replicas, passes per minute.
bench-sync-replicas: build
	dev/stack up
	status=0; . .stack/env && $(IN_STACK) bench/sync/replicas || status=$$?; \
		dev/stack down; exit $$status

# The story on the local stack (dev/demo): checks the machine, builds what is missing, reuses
# a healthy stack (or starts one), then runs the story; the stack stays up afterwards.
demo:
	dev/demo check
	$(MAKE) deps build static
	dev/demo stack
	dev/stack exec dev/demo story

stack-up:
	dev/stack up

stack-down:
	dev/stack down

clean:
	rm -rf $(BUILD) $(SAN_BUILD) $(STATIC_BUILD) build-fuzz
