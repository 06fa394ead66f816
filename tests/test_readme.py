"""The README names every forwarder flag, every transform setting and template parameter."""

from __future__ import annotations

import re
from pathlib import Path

from forwarder.config import build_parser
from localaws.stack_config import load_template
from transform_lambda.settings import ENV_VARS

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_every_forwarder_flag_and_its_env_var_is_documented() -> None:
    flags = [
        action.option_strings[0]
        for action in build_parser()._actions
        if action.option_strings and action.option_strings[0] != "-h"
    ]
    assert "--delivery-stream" in flags
    for flag in flags:
        assert f"`{flag}" in README, flag
        env = "PODHOSE_" + flag.removeprefix("--").upper().replace("-", "_")
        assert f"`{env}`" in README, env


def test_every_transform_setting_is_documented() -> None:
    for name in ENV_VARS:
        assert re.search(rf"`{name}`[^\n]*\| `[^`]*`|`{name}` \| empty", README), name


def test_every_template_parameter_is_documented() -> None:
    template = load_template()
    for name in template["Parameters"]:
        assert f"`{name}`" in README, name


def test_the_two_commands_are_the_readme_s_and_ci_runs_the_test_one() -> None:
    assert "make demo" in README
    assert "make test" in README
    assert "make test" in (ROOT / ".ci" / "run").read_text()
