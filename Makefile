# hsmkms: the targets CI and people call. `make run` starts an appliance in ./data,
# `make test` installs what is missing and runs every suite.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := build

# The Go toolchain lives in /usr/local/go on our machines; it may not be on PATH.
export PATH := /usr/local/go/bin:$(PATH)
GO ?= go
GO_VERSION := $(shell sed -n 's/^go //p' go.mod)
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
# Pinned so lint results do not change under us; see `make lint`.
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT := $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get
# gcc and libc6-dev: miekg/pkcs11 uses cgo, and so does -race.
RUN_PKGS := softhsm2 gcc libc6-dev ca-certificates
TEST_PKGS := $(RUN_PKGS) python3-pykmip libmongocrypt-dev pkg-config openssl

GO_FILES = $(shell find . -name '*.go' -not -path './.git/*' -not -path './node_modules/*' -not -path './data/*')

# apt_install installs the packages in $(1) that are not installed yet, running
# apt-get update once and only when something is missing.
define apt_install
	@missing=""; \
	for p in $(1); do \
		dpkg-query -W -f='$${Status}' "$$p" 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		$(APT) update -q; \
		$(APT) install -y -q --no-install-recommends $$missing; \
	fi
endef

.PHONY: build deps deps-run go-toolchain run test e2e bench fuzz lint package clean

## build: compile bin/hsmkms
build: go-toolchain
	$(GO) build -trimpath -ldflags "-X main.version=$(VERSION)" -o bin/hsmkms ./cmd/hsmkms

## deps: system packages for every test suite, then Go modules
deps: go-toolchain
	$(call apt_install,$(TEST_PKGS))
	$(GO) mod download

## deps-run: only what `make run` needs
deps-run: go-toolchain
	$(call apt_install,$(RUN_PKGS))

# go-toolchain checks for Go; our machines carry it in /usr/local/go (see go.mod for
# the version), and an older go switches toolchains itself through the module proxy.
go-toolchain:
	@command -v $(GO) >/dev/null 2>&1 || { echo "go not found: install Go $(GO_VERSION) into /usr/local/go"; exit 1; }

## run: start an appliance in ./data (created on first run)
run: deps-run build
	@if [ ! -f data/hsmkms.toml ]; then bin/hsmkms init --dir data; fi
	bin/hsmkms serve --dir data

## test: vet, format check, staticcheck, unit tests with -race against real SoftHSM2, end-to-end suites
test: deps
	$(GO) vet ./...
	@unformatted=$$(gofmt -l $(GO_FILES)); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet -tags 'e2e cse' ./test/...
	$(GO) run $(STATICCHECK) ./...
	HSMKMS_REQUIRE_SOFTHSM=1 $(GO) test -race -count=1 ./...
	@$(MAKE) --no-print-directory e2e
	@$(MAKE) --no-print-directory e2e-race

## e2e: end-to-end suites in test/ (real processes and clients), if any exist yet
e2e: build
	@if [ -n "$$(find test -name '*_test.go' 2>/dev/null)" ]; then \
		echo "HSMKMS_BIN=$(CURDIR)/bin/hsmkms $(GO) test -tags 'e2e cse' -count=1 -timeout 30m ./test/..."; \
		HSMKMS_BIN=$(CURDIR)/bin/hsmkms $(GO) test -tags 'e2e cse' -count=1 -timeout 30m ./test/...; \
	else \
		echo "no end-to-end suites in test/ yet"; \
	fi

## e2e-race: the mirroring suites against a server built with -race (its state is shared
## between streams, pullers and KMIP requests, which only real processes exercise)
e2e-race: go-toolchain
	$(GO) build -race -o bin/hsmkms-race ./cmd/hsmkms
	HSMKMS_BIN=$(CURDIR)/bin/hsmkms-race $(GO) test -tags 'e2e cse' -count=1 -timeout 30m -run 'TestMirror' ./test/

## bench: measure the appliance (see README, Performance)
bench: deps build
	bin/hsmkms bench

## fuzz: run each fuzz target for FUZZTIME (default 30s)
FUZZTIME ?= 30s
fuzz: go-toolchain
	$(GO) test -run '^$$' -fuzz '^FuzzReadMessage$$' -fuzztime $(FUZZTIME) ./kmip/wire
	$(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME) ./kmip/msg
	$(GO) test -run '^$$' -fuzz '^FuzzServeMessage$$' -fuzztime $(FUZZTIME) ./kmip
	$(GO) test -run '^$$' -fuzz '^FuzzOps$$' -fuzztime $(FUZZTIME) ./kmip/ops

## package: the Debian package dist/hsmkms_<version>_<arch>.deb (see packaging/deb)
package: build
	packaging/deb/build.sh bin/hsmkms '$(VERSION)' dist

## lint: gofmt, go vet and staticcheck
lint: go-toolchain
	@unformatted=$$(gofmt -l $(GO_FILES)); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags 'e2e cse' ./test/...
	$(GO) run $(STATICCHECK) ./...

clean:
	rm -rf bin dist
