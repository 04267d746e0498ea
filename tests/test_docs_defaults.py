"""docs/agents.md states every built-in agent's defaults exactly as the config classes do."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from seqeval.agent_table import BEGIN_MARKER, END_MARKER, defaults_markdown, field_comments
from seqeval.algorithms.registry import BUILTIN_AGENTS, get_agent

DOCS = Path(__file__).resolve().parents[1] / "docs" / "agents.md"


def test_the_docs_hold_the_generated_defaults_of_every_builtin_agent():
    text = DOCS.read_text()
    generated = text.split(BEGIN_MARKER, 1)[1].split(END_MARKER, 1)[0].strip()
    expected = defaults_markdown([get_agent(name) for name in BUILTIN_AGENTS]).strip()
    assert generated == expected, ("docs/agents.md is out of date: paste the output of "
                                   "`seqeval agents --markdown` between its markers")


def test_every_builtin_setting_is_documented_with_a_comment():
    for name in BUILTIN_AGENTS:
        config_class = get_agent(name).config_class
        comments = field_comments(config_class)
        for field in dataclasses.fields(config_class):
            assert comments.get(field.name), f"{name}.{field.name} has no comment in its class"


def test_a_table_row_gives_the_default_as_typed_on_the_command_line():
    @dataclasses.dataclass(frozen=True)
    class Config:
        widths: tuple[int, ...] = (64, 64)  # hidden layers
        clip: bool = False  # clip | or not
        target: float | None = None

    agent = dataclasses.replace(get_agent("bc"), name="probe", config_class=Config)
    table = defaults_markdown([agent])
    assert "| `widths` | `64,64` | hidden layers |" in table
    assert "| `clip` | `false` | clip \\| or not |" in table
    assert "| `target` | `none` |  |" in table
