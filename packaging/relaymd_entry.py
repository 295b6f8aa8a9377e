"""PyInstaller entry point of the single-file operator binary `relaymd` (CLI + daemon)."""

from relaymd.cli.main import main

if __name__ == "__main__":
    main()
