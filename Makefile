# BoxLite developer tasks.
PYTHON ?= python3
JOBS ?= $(shell nproc)

.PHONY: runtime runtime-debug

# ---- VM runtime artifact (owner: VM engine; see docs/vm.md) ---------------------------------
# Builds target/boxlite-runtime[-debug]/ (guest kernel + initramfs + manifest) from Debian
# packages; cached by input hash in $$BOXLITE_RUNTIME_CACHE (default /var/cache/boxlite-runtime).
# Needs: apt-get install linux-source-6.1 flex bison bc libelf-dev libssl-dev (kernel build).
runtime:
	$(PYTHON) runtime/build.py --jobs $(JOBS)

runtime-debug:
	$(PYTHON) runtime/build.py --debug --jobs $(JOBS)

# ---- other targets (owned by others) go below this line -------------------------------------

# ---- SDK packaging, dev installs, tests, benchmarks (owner: build/CI; see docs/ci.md) ----------
# The runtime artifact is built once (`make runtime`) and REUSED: these targets depend on its
# files, never rebuild it when present, and only copy it (into the wheel / the npm package).
RUNTIME_DIR ?= target/boxlite-runtime
RUNTIME_MANIFEST := $(RUNTIME_DIR)/manifest.json
DIST ?= dist
NODE_DIR := sdks/node
PY_EXTRAS ?= cli,server,test,dev
BENCH_ARGS ?=
# Warn (never rebuild) when the artifact was built from other inputs than the current tree's
# (exit 1); fail when the check itself fails (exit 2: a bug, or no apt; `RUNTIME_CHECK=` skips it).
RUNTIME_CHECK = @$(PYTHON) .github/scripts/runtime_key.py --check $(RUNTIME_DIR) || [ $$? -eq 1 ]

.PHONY: dev\:python dev\:node dist\:python dist\:node test bench

# Built only when missing; an existing artifact is used as is (`make runtime` refreshes it).
$(RUNTIME_MANIFEST):
	$(MAKE) runtime PYTHON="$(PYTHON)"
	@test -f $@ || { echo "no runtime artifact at $(RUNTIME_DIR)" >&2; exit 1; }

# npm ci only when the lockfile changed (npm ci wipes node_modules).
$(NODE_DIR)/node_modules/.package-lock.json: $(NODE_DIR)/package-lock.json
	cd $(NODE_DIR) && npm ci --no-audit --no-fund --loglevel=error

# Editable install; the artifact is found in target/boxlite-runtime by runtime_artifact.locate()
# (no copy in src/, so `make runtime` takes effect without reinstalling).
dev\:python: $(RUNTIME_MANIFEST)
	$(PYTHON) -m pip install -q --disable-pip-version-check -e ".[$(PY_EXTRAS)]"
	cd / && $(PYTHON) -c "from boxlite.runtime_artifact import locate; print('boxlite: VM runtime artifact', locate().path)"

dev\:node: $(RUNTIME_MANIFEST) $(NODE_DIR)/node_modules/.package-lock.json
	cd $(NODE_DIR) && BOXLITE_RUNTIME_ARTIFACT="$(abspath $(RUNTIME_DIR))" npm run build

# A py3-none-manylinux_2_17_<arch>.manylinux2014_<arch> wheel holding
# boxlite/runtime/{vmlinux,initramfs.cpio,manifest.json} (setup.py copies them and picks the tag;
# BOXLITE_REQUIRE_RUNTIME makes a missing artifact an error). setuptools builds in a fresh
# directory of its own (BOXLITE_BUILD_BASE), not in build/ and src/*.egg-info: a stale module or
# file list from an earlier build cannot reach the wheel, and two builds of one checkout at once
# cannot delete or rewrite each other's files.
dist\:python: $(RUNTIME_MANIFEST)
	$(RUNTIME_CHECK)
	@mkdir -p $(DIST)
	base=$$(mktemp -d "$${TMPDIR:-/tmp}/boxlite-wheel.XXXXXX") && trap 'rm -rf "$$base"' EXIT && \
	    BOXLITE_BUILD_BASE="$$base" BOXLITE_REQUIRE_RUNTIME=1 BOXLITE_RUNTIME_ARTIFACT="$(abspath $(RUNTIME_DIR))" \
	    $(PYTHON) -m pip wheel -q --disable-pip-version-check --no-deps -w "$(DIST)" .

# boxlite-<version>.tgz with runtime/{vmlinux,initramfs.cpio,manifest.json} (prepack copies them).
dist\:node: $(RUNTIME_MANIFEST) $(NODE_DIR)/node_modules/.package-lock.json
	$(RUNTIME_CHECK)
	@mkdir -p $(DIST)
	cd $(NODE_DIR) && tgz=$$(BOXLITE_RUNTIME_ARTIFACT="$(abspath $(RUNTIME_DIR))" \
	    npm pack --silent --pack-destination "$(abspath $(DIST))" | tail -n 1) && \
	    tar -tzf "$(abspath $(DIST))/$$tgz" package/runtime/manifest.json >/dev/null && \
	    echo "$(DIST)/$$tgz"

test:
	PYTHON="$(PYTHON)" bash scripts/test.sh $(PYTEST_ARGS)

# All benchmarks (docs/performance.md); reports in bench/results/. `BENCH_ARGS=--quick`: smoke run.
bench: $(RUNTIME_MANIFEST)
	$(PYTHON) bench/run_all.py $(BENCH_ARGS)
