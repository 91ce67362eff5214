"""gattn.models."""
