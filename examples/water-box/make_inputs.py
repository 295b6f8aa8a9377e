"""Write a small TIP3P water box as OpenMM System/State/Integrator XML (an `openmm` job bundle).

    python examples/water-box/make_inputs.py OUT_DIR [--box-nm 1.6] [--seed 7]

Then `relaymd submit OUT_DIR --engine openmm --steps 50000`. The generator itself lives in
`relaymd.demo.water_box` (the demo and the tests use the same one).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from relaymd.demo.water_box import write_water_box


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--box-nm", type=float, default=1.6)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--platform", default="CPU", help="OpenMM platform for minimization")
    args = parser.parse_args()
    box = write_water_box(args.out_dir, args.box_nm, seed=args.seed, platform=args.platform)
    print(f"{box.atoms} atoms written to {args.out_dir}")


if __name__ == "__main__":
    main()
