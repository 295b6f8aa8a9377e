"""The operator CLI `relaymd` (typer + rich). Entry point: relaymd.cli.app:main."""
