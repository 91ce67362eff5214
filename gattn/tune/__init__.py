"""gattn.tune."""
