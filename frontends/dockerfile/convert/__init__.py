"""Dockerfile -> LLB conversion (BuildKit v0.11 ``dockerfile2llb``).

``dockerfile_to_llb(dockerfile, opts, bridge)`` parses the Dockerfile, builds the stages the
target needs as a graph, and returns the target's LLB state and image config.
"""

from bkcore.frontends.dockerfile.convert.graph import dockerfile_to_llb
from bkcore.frontends.dockerfile.convert.options import ConvertOptions, ConvertResult

__all__ = ["ConvertOptions", "ConvertResult", "dockerfile_to_llb"]
