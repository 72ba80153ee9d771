# Developer shortcuts.
PYTHON ?= python3

.PHONY: proto
proto:  ## regenerate core/llb/pb from core/llb/proto/*.proto
	$(PYTHON) scripts/gen_proto.py
