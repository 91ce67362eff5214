"""gattn.datasets."""
