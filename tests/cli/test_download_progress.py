"""`jobs download`: the progress bar knows the total before the first byte, and files already
there with their sha256 are kept. A real `relaymd` process on file:// storage; the bar is read
as a terminal would show it."""

from __future__ import annotations

import json

from relaymd.models.storage import ManifestFile, OutputsManifest
from relaymd.storage.hashing import sha256_bytes
from tests.support.cli_env import CliEnv, make_job_dir


def test_the_bar_counts_to_the_total_and_a_second_download_fetches_nothing(cli: CliEnv) -> None:
    job_id = cli.json("submit", str(make_job_dir(cli.root)))["submitted"][0]["job_id"]
    # Play two workers: output chunks of epochs 1 and 2 in the storage layout, no manifest
    # yet (sizes come from the store), 8000 bytes in all.
    outputs = cli.storage_dir / "jobs" / job_id / "outputs"
    for epoch, size in ((1, 3000), (2, 5000)):
        (outputs / str(epoch)).mkdir(parents=True)
        (outputs / str(epoch) / "run.log").write_bytes(bytes([epoch]) * size)
    dest = cli.root / "dl"
    terminal = {"TTY_COMPATIBLE": "1", "COLUMNS": "200"}  # rich draws its bar as on a tty
    done = cli.run("jobs", "download", job_id, "--dest", str(dest), "--no-checkpoint", env=terminal)
    assert done.returncode == 0, done.stderr
    assert "8.0/8.0 kB" in done.stderr, done.stderr  # completed/total, not an open-ended count
    for epoch in (1, 2):
        written = (dest / "outputs" / str(epoch) / "run.log").read_bytes()
        assert written == (outputs / str(epoch) / "run.log").read_bytes()

    # Once the workers list them with their sha256 (outputs/<epoch>/manifest.json), files
    # already there are kept: a second download fetches nothing, and a changed one again.
    for epoch in (1, 2):
        data = (outputs / str(epoch) / "run.log").read_bytes()
        listed = ManifestFile(path="run.log", sha256=sha256_bytes(data), size=len(data))
        manifest = OutputsManifest(job_id=job_id, epoch=epoch, files=[listed])
        (outputs / str(epoch) / "manifest.json").write_text(manifest.model_dump_json())
    (dest / "outputs" / "2" / "run.log").write_bytes(b"x" * 5000)  # damaged locally
    again = cli.run("jobs", "download", job_id, "--dest", str(dest), "--no-checkpoint", "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["skipped"] == 1
    assert (dest / "outputs" / "2" / "run.log").read_bytes() == bytes([2]) * 5000
