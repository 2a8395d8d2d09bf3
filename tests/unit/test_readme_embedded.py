"""The README's "Embedded" example runs as written, in a fresh directory (lab defaults)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def embedded_example() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Embedded\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1, "the Embedded section has one python example"
    return blocks[0]


def test_the_readme_embedded_example_runs(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NORTHSTAR_")}
    run = subprocess.run(
        [sys.executable, "-c", embedded_example()],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == "1 hello True"
    assert lines[1].startswith("auth.forbidden_role (403): ")
    assert (tmp_path / ".northstar" / "data" / "northstar.db").is_file()
