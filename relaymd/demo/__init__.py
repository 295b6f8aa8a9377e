"""What `relaymd demo` runs, also used by the examples, tests and benchmarks: a generated
TIP3P water box as an `openmm` job (water_box.py). The command itself is relaymd/cli/cmd_demo.py."""
