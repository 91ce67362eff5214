"""gattn.nn."""
