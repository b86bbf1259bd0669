# edgecanary: see README.md. Every target runs on loopback only.
SHELL := /bin/bash
.DEFAULT_GOAL := check

# The Traefik version is written once, in internal/stage (the tests read it there too).
TRAEFIK_VERSION := $(shell sed -n 's/^const TraefikVersion = "\(.*\)"$$/\1/p' internal/stage/stage.go)
YAEGI_VERSION   := v0.16.1
CACHE   ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/edgecanary
TRAEFIK := $(CACHE)/traefik-$(TRAEFIK_VERSION)
YAEGI   := $(CACHE)/bin/yaegi-$(YAEGI_VERSION)
GOLANGCI_VERSION := v2.15.0
GOLANGCI := $(CACHE)/bin/golangci-lint-$(GOLANGCI_VERSION)
# yaegi_test's GOPATH tree and the test logs, one per checkout (keyed by
# its path), so that two worktrees can run them at once without removing
# each other's tree or overwriting each other's log.
CHECKOUT_KEY := $(shell printf %s "$(CURDIR)" | cksum | cut -d' ' -f1)
GOPATH_TREE := $(CACHE)/yaegi-gopath-$(CHECKOUT_KEY)
YAEGI_LOG   := $(CACHE)/yaegi-test-$(CHECKOUT_KEY).log
E2E_LOG     := $(CACHE)/e2e-$(CHECKOUT_KEY).log
MODULE  := github.com/edgecanary/edgecanary
# kube-apiserver for the Kubernetes e2e test, also written once in internal/stage.
KUBE_VERSION   := $(shell sed -n 's/^const KubeVersion = "\(.*\)"$$/\1/p' internal/stage/stage.go)
KUBE_APISERVER := $(CACHE)/kube-apiserver-$(KUBE_VERSION)
export EDGECANARY_TRAEFIK := $(TRAEFIK)
export EDGECANARY_KUBE_APISERVER := $(KUBE_APISERVER)

.PHONY: generate check test unit yaegi_test rules lint vendor traefik kube-apiserver e2e e2e-short demo demo-weight demo-break demo-slow demo-fix demo-rollback demo-promote demo-rollout demo-rollout-bad demo-status bench fuzz fuzz-short soak clean

## check: everything CI runs (lint, unit and Yaegi tests, the real-Traefik e2e suite)
check: lint test e2e

## test: unit tests, compiled and through the Yaegi interpreter, and the alert rules
test: unit yaegi_test rules fuzz-short

# Two modules: the root (plugin, wire, internal, demo) and sidecar/.
unit:
	go test -count=1 ./...
	go test -count=1 -race -short ./...
	cd sidecar && go test -count=1 ./...
	cd sidecar && go test -count=1 -race -short ./...

$(YAEGI):
	mkdir -p $(CACHE)/bin
	GOBIN=$(CACHE)/bin/tmp-yaegi go install github.com/traefik/yaegi/cmd/yaegi@$(YAEGI_VERSION)
	mv $(CACHE)/bin/tmp-yaegi/yaegi $(YAEGI) && rmdir $(CACHE)/bin/tmp-yaegi

## yaegi_test: run plugin/'s tests in Yaegi, from a GOPATH tree as Traefik lays it out
yaegi_test: $(YAEGI)
	rm -rf $(GOPATH_TREE) && mkdir -p $(GOPATH_TREE)/src/$(dir $(MODULE))
	ln -s $(CURDIR) $(GOPATH_TREE)/src/$(MODULE)
	cd $(GOPATH_TREE) && GOPATH=$(GOPATH_TREE) GO111MODULE=off $(YAEGI) test -short -tags yaegi -v $(MODULE)/plugin 2>&1 | tee $(YAEGI_LOG) | grep -E '^(--- |PASS|FAIL|ok)' ; \
	  ! grep -qE '^(--- FAIL|FAIL|panic:)' $(YAEGI_LOG) && grep -q '^PASS' $(YAEGI_LOG)

## rules: the Prometheus rules, checked and unit-tested by promtool
rules:
	cd demo/prometheus && promtool check rules rules.yml && promtool test rules rules_test.yml

$(GOLANGCI):
	mkdir -p $(CACHE)/bin
	GOBIN=$(CACHE)/bin/tmp-golangci go install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_VERSION)
	mv $(CACHE)/bin/tmp-golangci/golangci-lint $(GOLANGCI) && rmdir $(CACHE)/bin/tmp-golangci

## generate: render the generated request paths and the bench floor's status wrapper (internal/gen)
generate:
	go run ./internal/gen/cmd

## lint: gofmt, go vet, golangci-lint (.golangci.yml, every disabled rule with its reason), tidy modules, in the root and sidecar/
lint: $(GOLANGCI)
	go run ./internal/gen/cmd -check
	gofmt -l plugin wire sidecar internal demo e2e | tee /dev/stderr | (! read)
	$(GOLANGCI) run ./...
	cd sidecar && $(GOLANGCI) run ./...
	go vet ./...
	cd sidecar && go vet ./...
	cd e2e && go vet ./...
	cd e2e/cmd/bench/floor && go vet .
	go mod tidy -diff
	cd sidecar && go mod tidy -diff
	go mod verify
	cd sidecar && go mod verify

## vendor: tidy both modules; vendor/ holds the plugin's dependencies only (the sidecar's come from the module proxy)
vendor:
	go mod tidy
	go mod vendor
	cd sidecar && go mod tidy

## traefik: build the real Traefik once from the Go module proxy and cache it
traefik: $(TRAEFIK)
$(TRAEFIK):
	mkdir -p $(CACHE)
	go mod download github.com/traefik/traefik/v3@$(TRAEFIK_VERSION)
	cd "$$(go env GOMODCACHE)/github.com/traefik/traefik/v3@$(TRAEFIK_VERSION)" && \
	  GOFLAGS=-mod=mod go build -trimpath -o $(TRAEFIK).tmp ./cmd/traefik
	mv $(TRAEFIK).tmp $(TRAEFIK)

## kube-apiserver: build the real kube-apiserver once from the Go module proxy and cache it.
# `go install` refuses k8s.io/kubernetes (its go.mod replaces the staging modules with local
# directories), so a throwaway module requires it and points each staging module at its release.
KUBE_BUILD := $(CACHE)/kube-apiserver-build
kube-apiserver: $(KUBE_APISERVER)
$(KUBE_APISERVER):
	rm -rf $(KUBE_BUILD) && mkdir -p $(KUBE_BUILD)
	go mod download k8s.io/kubernetes@$(KUBE_VERSION)
	cd $(KUBE_BUILD) && { \
	  printf 'module kubeapiserverbuild\n\ngo 1.24.0\n\nrequire k8s.io/kubernetes $(KUBE_VERSION)\n\n'; \
	  sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/src/.*#replace \1 => \1 $(patsubst v1.%,v0.%,$(KUBE_VERSION))#p' \
	    "$$(go env GOMODCACHE)/k8s.io/kubernetes@$(KUBE_VERSION)/go.mod"; } > go.mod && \
	  printf '//go:build tools\n\npackage tools\n\nimport _ "k8s.io/kubernetes/cmd/kube-apiserver"\n' > tools.go && \
	  GOWORK=off GOFLAGS=-mod=mod go build -trimpath -o $(KUBE_APISERVER).tmp k8s.io/kubernetes/cmd/kube-apiserver
	mv $(KUBE_APISERVER).tmp $(KUBE_APISERVER)
	rm -rf $(KUBE_BUILD)

## e2e: the Yaegi loader and the tests against the real Traefik (and a real kube-apiserver)
e2e: $(TRAEFIK) $(KUBE_APISERVER)
	cd e2e && go test -count=1 -timeout 30m -v ./... 2>&1 | tee $(E2E_LOG) | grep -E '^(\s*--- |PASS|FAIL|ok|\s+\w+_test.go)'; \
	  test $${PIPESTATUS[0]} -eq 0

e2e-short: $(TRAEFIK)
	cd e2e && go test -count=1 -short -timeout 20m ./...

## demo: Traefik, two app versions, the plugin, the sidecar and Prometheus on 127.0.0.1 (Ctrl-C stops it)
demo: $(TRAEFIK)
	go run ./demo/cmd/demo run

W ?= 50
demo-weight:
	go run ./demo/cmd/demo weight $(W)
demo-break:
	go run ./demo/cmd/demo break
demo-slow:
	go run ./demo/cmd/demo slow
demo-fix:
	go run ./demo/cmd/demo fix
demo-rollback:
	go run ./demo/cmd/demo rollback
demo-promote:
	go run ./demo/cmd/demo promote
## demo-rollout: a progressive rollout of the healthy canary (10, 25, 50, 100% in steps of 20 s) that completes
demo-rollout:
	go run ./demo/cmd/demo rollout
## demo-rollout-bad: the same rollout with a canary that fails one request in ten: rolled back automatically
demo-rollout-bad:
	go run ./demo/cmd/demo rollout-bad
demo-status:
	go run ./demo/cmd/demo status

## bench: the plugin against Traefik alone and Traefik's native middlewares; writes BENCHMARKS.md
bench: $(TRAEFIK)
	cd e2e && go run ./cmd/bench -out ../BENCHMARKS.md $(BENCH_FLAGS)

## fuzz: every fuzz target for FUZZTIME each (a duration, or a count such as 30000x); fuzz-short is the CI version
FUZZTIME ?= 60s
FUZZ_TARGETS := e2e:FuzzConfig plugin:FuzzCookieAndOverride plugin:FuzzForwardedKey plugin:FuzzRedisReply plugin:FuzzGCRAReply sidecar:FuzzIngest
fuzz:
	@for t in $(FUZZ_TARGETS); do dir=$${t%%:*}; name=$${t##*:}; \
	  echo "fuzzing $$name in $$dir/ for $(FUZZTIME)"; \
	  (cd $$dir && go test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) .) || exit 1; done
# A count, not a duration: a duration that runs out while a worker is busy
# makes go test report "context deadline exceeded" as a failure.
fuzz-short:
	$(MAKE) fuzz FUZZTIME=30000x

## soak: ten minutes of mixed traffic with faults and reloads against the real Traefik
SOAK ?= 10m
soak: $(TRAEFIK)
	cd e2e && EDGECANARY_SOAK=$(SOAK) go test -count=1 -timeout 30m -run TestSoak -v .

clean:
	rm -rf bin
