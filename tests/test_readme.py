"""The README's code is run as written: a newcomer copies it first."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_readme_has_a_python_example():
    assert _python_blocks(), "README.md lost its 'Using the library' example"


def test_readme_python_examples_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the example saves model.npz in the working folder
    for index, block in enumerate(_python_blocks()):
        script = tmp_path / f"readme_{index}.py"
        script.write_text(block, encoding="utf-8")
        runpy.run_path(str(script), run_name="__main__")
    out = capsys.readouterr().out
    accuracy = float(re.search(r"accuracy: ([0-9.]+)", out).group(1))
    assert accuracy > 0.9  # a linearly separable toy problem: the loop must actually learn
    assert (tmp_path / "model.npz").is_file()
