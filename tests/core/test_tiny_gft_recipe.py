"""The README's "GFT on the tiny model" recipe, command for command: after the sft_mix warm-up,
GFT raises held-out accuracy measurably (issue 2). ~8 minutes on 2 CPU cores.

The recipe is seeded, but its outcome depends on the machine's floating-point paths (the same
code gave a different warm-up and GFT trajectory on two machines). The margin asked, 2 points on
200 prompts x 16 samples (standard error of the difference ~1.3), sits below every gain measured
with these settings (300 GFT steps: +6.2 as written, +4.5 and +5.2 with seeds 1 and 2, on
2026-11-30), not at it. With 200 steps the gains were +1.0 to +3.9 here: too close to it.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def readme_recipe() -> list[str]:
    """The commands of the README's recipe block, continuation lines joined."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("### GFT on the tiny model (CPU)", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    lines = re.sub(r"\\\n\s*", "", block).strip().splitlines()
    return [line.split("#")[0].strip() for line in lines if line.strip()]


def test_gft_raises_held_out_accuracy_after_the_warm_up(tmp_path):
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false"}
    outputs = []
    for command in readme_recipe():
        argv = command.split()
        assert argv[:3] == ["python", "-m", "gft_core"], command
        p = subprocess.run([sys.executable, *argv[1:], *(["--quiet"] if argv[3] in ("make-tiny", "train") else [])],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1800)
        assert p.returncode == 0, f"{command}\n{p.stderr[-3000:]}"
        outputs.append(json.loads(p.stdout.strip().splitlines()[-1]))
    before = outputs[2]["accuracy"]
    after = outputs[3]["eval_accuracy"]
    assert outputs[3]["status"] == "succeeded"
    assert after >= before + 0.02, f"held-out accuracy {before:.3f} -> {after:.3f} after GFT"
