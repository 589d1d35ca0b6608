"""The README's examples run as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def example(name: str) -> str:
    text = README.read_text()
    match = re.search(rf"<!-- readme-example: {name} -->\n```python\n(.*?)```", text, re.S)
    assert match, f"README example {name!r} not found"
    return match.group(1)


def test_custom_policy_example_runs(capsys):
    exec(compile(example("custom-policy"), "README.md", "exec"), {"__name__": "readme"})
    assert "TTFT" in capsys.readouterr().out
