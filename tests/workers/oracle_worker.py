"""One run of the resume-equivalence oracle in its own process, for the SIGKILL cases.

    python tests/workers/oracle_worker.py WORKDIR CONFIG_JSON [POINT_JSON]

Builds the run of CONFIG_JSON (see tests/oracle_support.py) in WORKDIR and calls fit once,
resuming from WORKDIR's checkpoints if there are any. With POINT_JSON (``["step_end", 7]``:
a hook and the loop's step), the process kills itself with SIGKILL when the run gets there.
A run that ends writes its outcome to WORKDIR/outcome/.
"""

from __future__ import annotations

import json
import pathlib
import sys

# The shared test helpers live one folder up, in tests/.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
from oracle_support import fit, save_outcome


def main() -> int:
    workdir = pathlib.Path(sys.argv[1])
    config = json.loads(sys.argv[2])
    point = json.loads(sys.argv[3]) if len(sys.argv) > 3 else None
    result = fit(config, workdir, point)
    (workdir / "outcome").mkdir(exist_ok=True)
    save_outcome(result, workdir / "outcome")
    return 0


if __name__ == "__main__":
    sys.exit(main())
