"""The Python API as a notebook uses it, end to end on the embedded default (local cluster,
file storage): prepare from an OpenMM Simulation, submit, let a real daemon relay it, download
and assemble. The verdict comes from the files (mdtraj, the CSV), not from RelayMD's state."""

from __future__ import annotations

import subprocess
import sys

import mdtraj
import pytest

from tests.support.cli_env import RELAYMD, CliEnv

STEPS = 1000
DCD_EVERY = 100


def _simulation() -> object:
    """What a notebook has: a small minimized water box as an openmm.app.Simulation."""
    import openmm as mm
    import openmm.app as app
    import openmm.unit as unit

    forcefield = app.ForceField("amber14/tip3pfb.xml")
    modeller = app.Modeller(app.Topology(), [])
    modeller.addSolvent(forcefield, boxSize=mm.Vec3(1.3, 1.3, 1.3) * unit.nanometer)
    system = forcefield.createSystem(
        modeller.topology,
        nonbondedMethod=app.CutoffPeriodic,
        nonbondedCutoff=0.6 * unit.nanometer,
        constraints=app.HBonds,
    )
    integrator = mm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 0.002)
    integrator.setRandomNumberSeed(3)
    sim = app.Simulation(
        modeller.topology, system, integrator, mm.Platform.getPlatformByName("Reference")
    )
    sim.context.setPositions(modeller.positions)
    sim.minimizeEnergy(maxIterations=50)
    sim.context.setVelocitiesToTemperature(300 * unit.kelvin, 3)
    return sim


@pytest.mark.slow
def test_notebook_flow_on_the_embedded_default(
    cli: CliEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    from relaymd import Client, RelayMDError, prepare_openmm_job

    env = {k: v for k, v in cli.env.items() if k != "RELAYMD_CONFIG"}  # the embedded default
    monkeypatch.delenv("RELAYMD_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", env["XDG_CONFIG_HOME"])
    # Client(state_dir=, data_dir=) sets these for the process; let monkeypatch restore them.
    monkeypatch.setenv("RELAYMD_STATE_DIR", str(cli.state_dir))
    monkeypatch.setenv("RELAYMD_DATA_DIR", str(cli.data_dir))

    sim = _simulation()
    job_dir = prepare_openmm_job(
        sim,
        cli.root / "water",
        steps=STEPS,
        title="notebook water",
        report_every_steps=50,
        dcd_every_steps=DCD_EVERY,
        gpus=0,
        platform="Reference",
    )
    assert {p.name for p in job_dir.iterdir()} == {
        "system.xml",
        "state.xml",
        "integrator.xml",
        "topology.pdb",
        "relaymd.yaml",
    }
    with pytest.raises(RelayMDError, match="not empty"):
        prepare_openmm_job(sim, job_dir, steps=STEPS)

    client = Client(state_dir=cli.state_dir, data_dir=cli.data_dir)
    job = client.submit(job_dir)
    assert job.total_steps == STEPS and job.spec.title == "notebook water"
    # A second job to act on, from a JobSpec (replacing relaymd.yaml): held before the daemon
    # starts, so it never runs.
    spec = job.spec.model_copy(update={"title": "from a JobSpec", "priority": -1})
    other = client.submit(spec, directory=job_dir)
    assert other.spec.title == "from a JobSpec" and other.bundle.sha256 == job.bundle.sha256
    assert client.hold(other.id).state == "held"
    assert [j.id for j in client.jobs(state="held")] == [other.id]
    with pytest.raises(RelayMDError, match="not held"):
        client.release(job.id)
    # The CLI sees what the API submitted (same state database).
    listed = subprocess.run(
        [str(RELAYMD), "jobs", "list", "--json"], env=env, capture_output=True, text=True
    )
    assert job.id in listed.stdout and other.id in listed.stdout

    started = subprocess.run(
        [str(RELAYMD), "daemon", "start", "--wait", "60"], env=env, capture_output=True, text=True
    )
    assert started.returncode == 0, started.stderr
    try:
        final = client.wait(job.id, timeout=600, poll_s=1.0)
    finally:
        subprocess.run([str(RELAYMD), "daemon", "stop"], env=env, capture_output=True, timeout=120)
    assert final.state == "completed", final.failure_reason
    history = client.history(job.id)
    assert history.segments and history.segments[-1].end_step == STEPS

    assert client.release(other.id).state == "queued"
    assert client.cancel(other.id).state == "cancelled"

    dest = cli.root / "results"
    result = client.download(job.id, dest, assemble=True)
    assert result.assembled is not None and result.checkpoint_dir is not None
    assembled = result.assembled
    assert assembled.topology == dest / "assembled" / "topology.pdb"
    traj = mdtraj.load(str(assembled.trajectory), top=str(assembled.topology))
    assert traj.n_frames == STEPS // DCD_EVERY
    assert traj.n_atoms == sim.topology.getNumAtoms()  # type: ignore[attr-defined]
    assert traj.topology.residue(0).name == "HOH"  # real names from the shipped PDB
    assert assembled.state_data is not None
    lines = assembled.state_data.read_text().splitlines()
    assert lines[0].startswith("#") and len(lines) == 1 + STEPS // 50
    assert lines[-1].split(",")[0] == str(STEPS)

    # Again into the same folder: every file is already there with its sha256, none fetched.
    again = client.download(job.id, dest)
    assert again.skipped == len(again.files) == len(result.files)
    client.close()


def test_import_relaymd_stays_light_until_the_api_is_used() -> None:
    probe = (
        "import sys, relaymd\n"
        "light = not {'pydantic', 'openmm', 'boto3'} & {m.split('.')[0] for m in sys.modules}\n"
        "client_cls = relaymd.Client\n"
        "print(light, client_cls.__module__, 'relaymd.api' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.split() == ["True", "relaymd.api", "True"]
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        import relaymd

        _ = relaymd.nope  # type: ignore[attr-defined]
