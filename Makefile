# Developer shortcuts.
PYTHON ?= python3

.PHONY: proto
proto:  ## regenerate core/llb/pb and core/api/pb from core/llb/proto and core/api/proto
	$(PYTHON) scripts/gen_proto.py
