"""The README's runtime example runs as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[3] / "README.md"


def test_the_runtime_example_runs(capsys):
    match = re.search(r"<!-- readme-example: runtime -->\n```python\n(.*?)```", README.read_text(), re.S)
    assert match, "README example 'runtime' not found"
    exec(compile(match.group(1), "README.md", "exec"), {"__name__": "readme"})
    assert capsys.readouterr().out == "lorem ip\nfinished (length) after 8 tokens\n"  # one character per token
