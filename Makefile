# calmline — run `make help` for the targets.
SHELL := /bin/bash
GO    ?= go
BIN   := $(CURDIR)/bin
CORPUS ?= ../shared/corpus

.DEFAULT_GOAL := help

help: ## Show this help.
	@awk 'BEGIN{FS=":.*## "} /^[a-zA-Z0-9_-]+:.*## /{printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

build: ## Build bin/calmline and the per-service binaries.
	@mkdir -p $(BIN)
	cd cmd && $(GO) build -o $(BIN)/calmline ./calmline

.PHONY: help build
