"""A stand-in for AToM-OpenMM 8.5's production run, for tests and demos of the `command` engine.

    python fake_atom.py atom.cntl

It reproduces the file behaviour that matters to a relay (read from AToM-OpenMM v8.5's source):

* The command line is `<script> <config>`; the working directory becomes the config file's
  parent. The config is a ConfigObj `.cntl` file (`KEY = value`, `#` comments, quoted
  comma lists). Keys: BASENAME, LAMBDAS, TEMPERATURES (replicas = len(LAMBDAS) x
  len(TEMPERATURES)), PRODUCTION_STEPS, PRNT_FREQUENCY, MAX_SAMPLES, CYCLE_TIME (here: seconds
  of wall time per MD chunk of one replica), CHECKPOINT_TIME (seconds between checkpoint
  rounds), CHECKPOINT_FILE (default `<BASENAME>_ckpt.xml`), WALL_TIME (minutes).
* Replicas r0..r{N-1}. After each MD chunk a replica's cycle goes up by one and its MD step
  count by PRODUCTION_STEPS; a line is appended to `r<i>/<BASENAME>.out` (opened for append,
  never cut back, flushed) when the step count is a multiple of PRNT_FREQUENCY.
* A checkpoint round deletes `ckpt_is_valid`, writes every replica's state XML (temp file +
  rename, like OpenMM's saveState), then re-creates `ckpt_is_valid`. The XML has OpenMM's
  State structure; its <Parameters> carry the replica-exchange bookkeeping as global
  parameters (`RECycle`, `REMDSteps`, `REStateId`, ...). SIGINT is ignored during a round,
  SIGTERM is not.
* Start: a replica with a checkpoint file loads it if `ckpt_is_valid` exists, else the run
  refuses to start ("Bad checkpoints"); a replica without one starts at cycle 1, step 0.
* The loop ends when every replica has MAX_SAMPLES = (cycle - 1) // (PRNT_FREQUENCY /
  PRODUCTION_STEPS) samples (or at WALL_TIME): checkpoint, exit 0. Already there at start:
  checkpoint and exit 0 at once.
* SIGTERM/SIGINT: checkpoint, log "Termination signal ... detected", sleep 20 s (AToM waits
  for its workers, then sleeps 20 s), exit 1.

* NODEFILE: one OpenMM worker per line `<node>,<platform>:<device>,<threads>,<arch>,,<tmp>`
  (an empty tmp field is refused); a GPU device index is relative to CUDA_VISIBLE_DEVICES, so
  an index past its entries cannot get a context and that worker is dropped; no worker left:
  "No compute devices are alive", exit 0. Replicas are multiplexed over the workers; each
  worker appends to `cntxt_<node>_<platform>_<device>/<BASENAME>.log`. Without a NODEFILE one
  worker runs on whatever is visible.

Simplifications: replicas run one after another in one process (no GPU workers) and never
exchange states, so a sample line is a pure function of (replica, MD step) and a relayed run's
files can be compared byte for byte with an uninterrupted run's. No trajectory is written.

Test knobs (environment, never needed for a demo):
  FAKE_ATOM_EXIT_SLEEP_S     the sleep after a termination signal (default 20, as AToM)
  FAKE_ATOM_PAUSE=<point>:<n> at the n-th time this process reaches <point>, write its pid to
  FAKE_ATOM_PAUSE_FILE       that file and wait there until killed. Points: `round_start`
                             (sentinel just deleted), `round_mid` (first replica's XML
                             written), `round_end` (sentinel re-created), `line` (n-th sample
                             line written), `line_after_round` (first sample line written
                             after the n-th round).
  FAKE_ATOM_LINE_COUNTS=<file>  in every round, also write <file> = {"r<i>/<BASENAME>.out":
                             lines}: makes it a generic `command` program that declares
                             which output lines belong to its checkpoint (output_line_counts)
`FAKE_ATOM_CRASH=1` exits 0 without sampling, like AToM when all of its GPU workers died.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from types import FrameType

SENTINEL = Path("ckpt_is_valid")


def read_cntl(path: Path) -> dict[str, str]:
    """ConfigObj's flat `KEY = value` syntax: comments, optional quotes."""
    keys: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = (part.strip() for part in line.split("=", 1))
        if value[:1] in "'\"" and value[-1:] == value[:1] and len(value) >= 2:
            value = value[1:-1]
        keys[key] = value
    return keys


class Device:
    """One nodefile line: the worker that runs some replicas' MD chunks."""

    def __init__(self, node: str, platform: str, device: str, arch: str) -> None:
        self.label = f"{node}:{platform}:{device} ({arch})"
        visible = [d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d]
        # What the index means on the node: the CUDA_VISIBLE_DEVICES entry it selects.
        self.physical = visible[int(device)] if visible and int(device) < len(visible) else device
        self.usable = (
            arch not in ("CUDA", "HIP", "OpenCL") or not visible or (int(device) < len(visible))
        )
        self.log_dir = Path(f"cntxt_{node}_{platform}_{device}")


def read_nodefile(path: Path) -> list[Device]:
    devices = []
    for raw in path.read_text().splitlines():
        if not raw.strip():
            continue
        fields = raw.strip().split(",")
        if len(fields) != 6 or ":" not in fields[1]:
            sys.exit(f"nodefile {path}: expected 6 fields like localhost,0:0,1,CUDA,,/tmp: {raw}")
        if not fields[5]:
            sys.exit(f"nodefile {path}: empty tmp folder in {raw!r}")
        platform, device = fields[1].split(":", 1)
        devices.append(Device(fields[0], platform, device, fields[3]))
    return devices


def start_devices(keys: dict[str, str]) -> list[Device]:
    listed = [Device("localhost", "0", "0", "CPU")]
    if "NODEFILE" in keys:
        listed = read_nodefile(Path(keys["NODEFILE"]))
    alive = []
    for device in listed:
        if device.usable:
            device.log_dir.mkdir(exist_ok=True)
            print(f"worker {device.label} on device {device.physical}", flush=True)
            alive.append(device)
        else:
            print(f"worker {device.label}: cannot create a context (no such device)", flush=True)
    return alive


def as_list(value: str) -> list[float]:
    return [float(x) for x in value.split(",") if x.strip()]


class Replica:
    def __init__(self, index: int, lam: float, temperature: float, base: str, ckpt: str) -> None:
        self.index = index
        self.lam = lam
        self.temperature = temperature
        self.cycle = 1
        self.mdsteps = 0
        self.stateid = index
        self.out_path = Path(f"r{index}/{base}.out")
        self.ckpt_path = Path(f"r{index}/{ckpt}")
        Path(f"r{index}").mkdir(exist_ok=True)
        self.out = self.out_path.open("a+")  # as AToM: append, never truncated

    def load_checkpoint(self) -> None:
        if not self.ckpt_path.is_file():
            return
        if not SENTINEL.is_file():
            print(
                "The simulation has been interrupted while writing the checkpoint files.",
                flush=True,
            )
            raise ValueError("Bad checkpoints")
        params = ET.parse(self.ckpt_path).getroot().find("Parameters")
        assert params is not None, f"{self.ckpt_path}: no <Parameters>"
        self.cycle = round(float(params.attrib["RECycle"]))
        self.mdsteps = round(float(params.attrib["REMDSteps"]))
        self.stateid = round(float(params.attrib["REStateId"]))
        print(f"Loading checkpointfile {self.ckpt_path}", flush=True)

    def energy(self) -> float:
        # Deterministic per (replica, step): a relayed run compares with an uninterrupted one.
        return -1000.0 - 10.0 * self.index - self.mdsteps / 1000.0

    def save_out(self) -> None:
        data = (self.stateid, self.temperature, 1.0, self.lam, self.lam, 0.1, 110.0, 0.0)
        data += (self.energy(), 0.5 * self.mdsteps / 1000.0, 0.0)
        self.out.write(("%d " + "%f " * (len(data) - 1) + "\n") % data)
        self.out.flush()

    def save_checkpoint(self) -> None:
        params = {
            "RECycle": self.cycle,
            "REMDSteps": self.mdsteps,
            "REStateId": self.stateid,
            "RETemperature": self.temperature,
            "REPotEnergy": self.energy(),
            "Lambda1": self.lam,
            "Lambda2": self.lam,
        }
        x = self.mdsteps / 1.0e6
        text = (
            '<?xml version="1.0" ?>\n'
            f'<State openmmVersion="8.5" stepCount="{self.mdsteps}" time="{self.mdsteps * 0.004:g}"'
            ' type="State" version="1">\n'
            "\t<PeriodicBoxVectors>\n"
            '\t\t<A x="2" y="0" z="0"/>\n\t\t<B x="0" y="2" z="0"/>\n\t\t<C x="0" y="0" z="2"/>\n'
            "\t</PeriodicBoxVectors>\n"
            "\t<Parameters " + " ".join(f'{k}="{v:.17g}"' for k, v in params.items()) + "/>\n"
            f'\t<Positions>\n\t\t<Position x="{x:.17g}" y="0" z="0"/>\n\t</Positions>\n'
            '\t<Velocities>\n\t\t<Velocity x="0" y="0" z="0"/>\n\t</Velocities>\n'
            "</State>\n"
        )
        tmp = self.ckpt_path.with_name(f"{self.ckpt_path.name}.{os.getpid()}.tmp")
        with tmp.open("w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.ckpt_path)


class Pause:
    """Stops this process at a named point the test chose, until the test kills it."""

    def __init__(self) -> None:
        spec = os.environ.get("FAKE_ATOM_PAUSE", "")
        self.point, _, n = spec.partition(":")
        self.n = int(n or "1")
        self.file = os.environ.get("FAKE_ATOM_PAUSE_FILE", "")
        self.seen: dict[str, int] = {}

    def at(self, point: str) -> None:
        self.seen[point] = self.seen.get(point, 0) + 1
        if point != self.point or self.seen[point] != self.n or not self.file:
            return
        Path(self.file).write_text(str(os.getpid()))
        while True:
            time.sleep(3600)


class Run:
    def __init__(self, keys: dict[str, str]) -> None:
        self.keys = keys
        base = keys["BASENAME"]
        ckpt = keys.get("CHECKPOINT_FILE", f"{base}_ckpt.xml")
        lambdas = as_list(keys["LAMBDAS"])
        temperatures = as_list(keys.get("TEMPERATURES", "300"))
        self.steps = int(keys["PRODUCTION_STEPS"])
        self.prnt = int(keys["PRNT_FREQUENCY"])
        if self.prnt % self.steps != 0:
            sys.exit("PRNT_FREQUENCY must be an integer multiple of PRODUCTION_STEPS.")
        self.cycle_to_sample = self.prnt // self.steps
        self.max_samples = int(keys["MAX_SAMPLES"]) if "MAX_SAMPLES" in keys else None
        self.chunk_s = float(keys.get("CYCLE_TIME", "30"))
        self.checkpoint_time = float(keys.get("CHECKPOINT_TIME", keys.get("CYCLE_TIME", "30")))
        self.wall_s = 60.0 * float(keys.get("WALL_TIME", "100000"))
        self.pause = Pause()
        self.devices = start_devices(keys)
        self.rounds = 0
        self.line_pending = False
        self.replicas = [
            Replica(len(temperatures) * li + ti, lam, t, base, ckpt)
            for li, lam in enumerate(lambdas)
            for ti, t in enumerate(temperatures)
        ]
        for replica in self.replicas:
            replica.load_checkpoint()

    def samples(self) -> list[int]:
        return [(r.cycle - 1) // self.cycle_to_sample for r in self.replicas]

    def enough(self) -> bool:
        return self.max_samples is not None and min(self.samples()) >= self.max_samples

    def checkpoint(self) -> None:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # SIGTERM stays live
        SENTINEL.unlink(missing_ok=True)
        self.pause.at("round_start")
        for i, replica in enumerate(self.replicas):
            replica.save_checkpoint()
            if i == 0:
                self.pause.at("round_mid")
        counts = os.environ.get("FAKE_ATOM_LINE_COUNTS")
        if counts:
            lines = {r.out_path.as_posix(): r.mdsteps // self.prnt for r in self.replicas}
            Path(f"{counts}.tmp").write_text(json.dumps(lines))
            os.replace(f"{counts}.tmp", counts)
        SENTINEL.write_text("Checkpoint files are valid")
        self.rounds += 1
        self.line_pending = True
        self.pause.at("round_end")
        signal.signal(signal.SIGINT, previous)

    def on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.checkpoint()
        print(f"Termination signal {signum} detected ... cleaning up.", flush=True)
        time.sleep(float(os.environ.get("FAKE_ATOM_EXIT_SLEEP_S", "20")))
        sys.exit(1)

    def md_chunk(self, replica: Replica) -> None:
        device = self.devices[replica.index % len(self.devices)]
        with (device.log_dir / f"{self.keys['BASENAME']}.log").open("a") as log:
            log.write(f"replica {replica.index} cycle {replica.cycle} device {device.physical}\n")
        time.sleep(self.chunk_s)
        replica.cycle += 1
        replica.mdsteps += self.steps
        if replica.mdsteps % self.prnt == 0:
            replica.save_out()
            self.pause.at("line")
            if self.line_pending:
                self.line_pending = False
                self.pause.at("line_after_round")

    def main(self) -> int:
        signal.signal(signal.SIGTERM, self.on_signal)
        signal.signal(signal.SIGINT, self.on_signal)
        print(f"Target number of samples: {self.max_samples}. Current: {min(self.samples())}")
        start = last_checkpoint = time.time()
        while not self.enough() and time.time() < start + self.wall_s:
            for replica in self.replicas:
                self.md_chunk(replica)
                if time.time() - last_checkpoint > self.checkpoint_time:
                    self.checkpoint()
                    last_checkpoint = time.time()
        print("Normal termination.", flush=True)
        self.checkpoint()
        return 0


def main() -> int:
    if len(sys.argv) != 2:
        sys.exit("usage: fake_atom.py <config.cntl>")
    config = Path(sys.argv[1]).resolve()
    os.chdir(config.parent)  # AToM works in the config file's folder
    if os.environ.get("FAKE_ATOM_CRASH") == "1":
        print("No compute devices are alive. Quitting.", flush=True)
        return 0
    run = Run(read_cntl(config))
    if not run.devices:
        print("No compute devices are alive. Quitting.", flush=True)
        return 0
    return run.main()


if __name__ == "__main__":
    sys.exit(main())
