"""Write ``lmccheck/reference_times.json`` from the manifests of a store filled by a cold claim run.

    LMCCHECK_CACHE=/tmp/cold make claims      # on an empty store: every product built
    python tools/reference_times.py /tmp/cold --machine "2-core x86-64 CPU (AVX512-BF16), no GPU"

For every check that never ran on a user's store, the plan of a run then adds the products that check used
on this machine, how many of them the user's store already holds, and how long the others took to build
here, naming the machine (``lmccheck.plan.reference_estimate``). The file holds for the seeds, kind of
device and code versions it was written with, and is ignored otherwise: rewrite it after a cold run
whenever a claim's products or a product kind's code version change.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lmccheck.plan import write_reference
from lmccheck.store import Store


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("store", type=Path, help="the store a cold claim run filled")
    parser.add_argument("--machine", required=True, help="the machine it ran on, as the plan should name it")
    parser.add_argument("--seeds", type=int, default=3, help="--lmc-seeds of that run (default 3)")
    parser.add_argument("--device-type", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--out", type=Path, default=None, help="default: lmccheck/reference_times.json")
    args = parser.parse_args(argv)
    if not args.store.is_dir():
        print(f"reference_times: {args.store} is not a store folder", file=sys.stderr)
        return 2
    try:
        path = write_reference(Store(args.store), args.seeds, args.device_type, args.machine, args.out)
    except (OSError, ValueError) as exc:
        print(f"reference_times: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
