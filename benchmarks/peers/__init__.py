"""Scripts that build and run the peers (in their own venvs) for the benchmarks."""
