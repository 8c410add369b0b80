"""Regenerate the golden pixel slices in tests/goldens/ on purpose.

Run it only when a change of output is intended (a new scheduler default, a different
seeding scheme, a torch upgrade), then commit the new JSON files with the reason:

    .venv/bin/python scripts/regen_goldens.py

It writes the tiny random-weight models to a temporary folder, runs every case of
tests/integration/test_goldens.py on the real engine exactly as the test suite does (CPU,
float32), and prints how far each case moved from the stored values.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # like the tests: nothing is downloaded
    sys.path.insert(0, str(ROOT))  # the cases live in the test module, one source for both
    import diffusers
    import torch

    from sdserve.compose import build_engine
    from sdserve.config import Settings
    from sdserve.engine.tiny import write_all_tiny
    from tests.integration.test_goldens import FAMILIES, GOLDEN_DIR, TOLERANCE, render_case

    GOLDEN_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        write_all_tiny(data / "demo-models")
        engine = build_engine(Settings(demo=True, data_dir=data, device="cpu", dtype="float32"))
        for family, (model, tasks) in FAMILIES.items():
            path = GOLDEN_DIR / f"{family}.json"
            old = json.loads(path.read_text())["cases"] if path.exists() else {}
            cases = {}
            for task in tasks:
                cases[task] = render_case(engine, family, task)
                moved = max((abs(a - b) for a, b in zip(cases[task], old[task], strict=True)), default=0) \
                    if task in old else None
                print(f"{family:15} {task:8} " + ("new" if moved is None else f"moved by {moved}/255"))
            header = json.dumps({
                "about": "Bottom-right 3x3 RGB pixels (0-255) of each case in tests/integration/test_goldens.py; "
                         "written by scripts/regen_goldens.py",
                "model": model,
                "tolerance_0_255": TOLERANCE,
                "torch": torch.__version__,
                "diffusers": diffusers.__version__,
            }, indent=1)
            # One line per case keeps a regeneration's diff readable.
            rows = ",\n".join(f"  {json.dumps(task)}: {json.dumps(values)}" for task, values in cases.items())
            path.write_text(header[:-2] + ',\n "cases": {\n' + rows + "\n }\n}\n")
    print(f"wrote {GOLDEN_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
