"""A stand-in for AToM-OpenMM's file behaviour, for tests and demos of the `command` engine.

    python fake_atom.py --replicas 2 --samples 30 --checkpoint-every 5 [--cycle-s 0.05]

Each cycle appends one sample line per replica to r<k>/fake.out. Every few cycles it
checkpoints like AToM: delete `ckpt_is_valid`, write r<k>/fake_ckpt.xml, recreate the marker.
On start it resumes from a valid checkpoint (truncating sample files to the checkpoint's
cycle, as AToM does); on SIGTERM it checkpoints and exits. `--crash` exits 0 without
sampling, like AToM when all of its GPU workers died.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

MARKER = Path("ckpt_is_valid")


def checkpoint(replicas: int, cycle: int) -> None:
    MARKER.unlink(missing_ok=True)
    for k in range(replicas):
        path = Path(f"r{k}/fake_ckpt.xml")
        path.write_text(f'<checkpoint replica="{k}" cycle="{cycle}"/>\n')
        os.fsync(os.open(path, os.O_RDONLY))
    MARKER.write_text("")


def resume_cycle(replicas: int) -> int:
    if not MARKER.exists():
        return 0
    cycles = set()
    for k in range(replicas):
        text = Path(f"r{k}/fake_ckpt.xml").read_text()
        cycles.add(int(text.split('cycle="')[1].split('"')[0]))
    if len(cycles) != 1:
        sys.exit(f"inconsistent checkpoint set: cycles {sorted(cycles)}")
    cycle = cycles.pop()
    for k in range(replicas):
        out = Path(f"r{k}/fake.out")
        lines = out.read_text().splitlines()[:cycle] if out.exists() else []
        if len(lines) != cycle:
            sys.exit(f"r{k}/fake.out has {len(lines)} samples, checkpoint says {cycle}")
        out.write_text("".join(line + "\n" for line in lines))
    return cycle


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--checkpoint-every", type=int, default=5)
    parser.add_argument("--cycle-s", type=float, default=0.05)
    parser.add_argument("--crash", action="store_true")
    args = parser.parse_args()
    if args.crash:
        print("all GPU workers crashed; exiting", flush=True)
        return
    for k in range(args.replicas):
        Path(f"r{k}").mkdir(exist_ok=True)
    cycle = resume_cycle(args.replicas)
    print(f"starting at cycle {cycle}", flush=True)
    stop = False

    def on_term(_signum: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    while cycle < args.samples and not stop:
        time.sleep(args.cycle_s)
        cycle += 1
        for k in range(args.replicas):
            with open(f"r{k}/fake.out", "a") as fh:
                fh.write(f"sample {cycle}\n")
        if cycle % args.checkpoint_every == 0:
            checkpoint(args.replicas, cycle)
    checkpoint(args.replicas, cycle)
    print(f"{'stopped' if stop else 'done'} at cycle {cycle}", flush=True)


if __name__ == "__main__":
    main()
