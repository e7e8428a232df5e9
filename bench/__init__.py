"""segflow's benchmarks (bench/README.md): the speed suite, its sections, baselines and harness."""
