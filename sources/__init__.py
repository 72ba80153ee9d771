"""bkcore package."""
