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
