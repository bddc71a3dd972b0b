"""The public API: ``__all__``, the package's names and the README agree."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import blnk_meter

README = Path(__file__).resolve().parent.parent / "README.md"


def test_all_is_sorted_and_unique() -> None:
    names = blnk_meter.__all__

    assert len(names) == len(set(names))
    assert names == sorted(names, key=lambda name: (not name.isupper(), name))


def test_all_matches_public_names() -> None:
    public = {
        name
        for name in vars(blnk_meter)
        if not name.startswith("_") and name not in {"annotations", "cli", "testing"}
    }

    assert public == set(blnk_meter.__all__)


def test_every_public_name_documented_in_readme() -> None:
    reference = README.read_text().split("## API reference", 1)[1]
    documented = set(re.findall(r"`([A-Za-z_]+)`", reference))

    missing = set(blnk_meter.__all__) - documented
    assert not missing, f"README's API reference lacks {sorted(missing)}"


def test_every_public_name_has_docstring() -> None:
    for name in blnk_meter.__all__:
        value = getattr(blnk_meter, name)
        if callable(value) or isinstance(value, type):
            assert value.__doc__, f"{name} has no docstring"


def test_package_ships_type_marker() -> None:
    assert (Path(blnk_meter.__file__).parent / "py.typed").is_file()


def test_readme_testing_example_runs(tmp_path: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    [example] = [block for block in blocks if "EmbeddedLedger()" in block]
    script = tmp_path / "example.py"
    script.write_text(example)

    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60
    )

    assert result.returncode == 0, result.stderr
    assert int(result.stdout.strip()) < 0
