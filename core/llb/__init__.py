"""The bkcore LLB model and Python SDK."""
