"""gattn.transforms."""
