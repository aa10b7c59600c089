# pathvm — make image | build | demo | test | bench | lint
#
# Every Debian package the project needs is installed by `deps`.
# The guest image is its own Cargo workspace (images/agent), built for the
# host target with no download (see ../shared/PLATFORM.md).

CARGO      ?= cargo
TARGET     := x86_64-unknown-linux-gnu
IMAGE      := images/out/agent.elf
AGENT_ELF  := images/agent/target/$(TARGET)/release/pathvm-agent
APT_PKGS   := iproute2 iputils-ping qemu-system-x86 nftables curl python3 openssh-server microsocks busybox-static dnsutils graphviz
PATHVM     := target/release/pathvm

.PHONY: all deps image build demo test bench lint fuzz clean

all: build

## deps: install the Debian packages tests and demos need (skipped when present)
deps:
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y $$missing; \
	fi; \
	if ! command -v qemu-img >/dev/null 2>&1; then \
		echo "installing qemu-utils (qemu-system-x86 from bookworm replaces a newer qemu-utils; qemu-img stays usable)"; \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y qemu-utils; \
	fi

## image: build the guest agent image into images/out/agent.elf
image:
	cd images/agent && $(CARGO) build --release --locked --target $(TARGET)
	mkdir -p images/out
	cp $(AGENT_ELF) $(IMAGE)
	@echo "guest image: $(IMAGE) ($$(stat -c %s $(IMAGE)) bytes)"

## build: the guest image, the pathvm binary and its preload shim (release)
build: image
	$(CARGO) build --release --locked --workspace

## demo: build everything and show it working with real VMs
demo: deps build
	./scripts/demo.sh $(PATHVM) $(IMAGE)

## test: install what tests need, then run every test
test: deps image
	$(CARGO) build --locked --workspace
	PATHVM_IMAGE=$(CURDIR)/$(IMAGE) $(CARGO) test --locked --workspace
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

## bench: spawn beside QEMU microvm; the router alone beside open+seal; relay, connect and each protocol beside the kernel
bench: deps build
	$(PATHVM) bench spawn -n 200 --compare-qemu --json --image $(IMAGE)
	taskset -c 1 $(PATHVM) bench router --json
	$(PATHVM) bench relay --json --image $(IMAGE)
	$(PATHVM) bench connect --json --image $(IMAGE)
	$(PATHVM) bench protocols --json --image $(IMAGE)
	$(PATHVM) bench density --json --image $(IMAGE)

## fuzz: run each fuzz target FUZZ_SECONDS (default 60); FUZZ_TARGETS picks some
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?=
fuzz:
	./scripts/fuzz.sh $(FUZZ_SECONDS) $(FUZZ_TARGETS)

## lint: formatting and clippy only
lint:
	$(CARGO) fmt --all -- --check
	cd images/agent && $(CARGO) fmt -- --check
	cd images/agent && $(CARGO) clippy --locked --release --target $(TARGET) -- -D warnings
	$(CARGO) clippy --locked --all-targets -- -D warnings

clean:
	$(CARGO) clean
	cd images/agent && $(CARGO) clean
	rm -rf images/out
