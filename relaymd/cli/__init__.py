"""The operator CLI `relaymd` (typer + rich). Entry point: relaymd.cli.main:main."""
