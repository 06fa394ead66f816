"""The documentation: a short README, pages under docs/ whose links all resolve, and every
forwarder flag, transform setting and template parameter documented where it belongs."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

from devstack.stack_config import load_template
from forwarder.config import OPTIONS, build_parser
from transform_lambda.settings import ENV_VARS

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def text(name: str) -> str:
    return (DOCS / name).read_text()


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation but `-` and `_` dropped, spaces
    to `-`, a repeated anchor numbered."""
    seen: dict[str, int] = {}
    out = set()
    for line in FENCE.sub("", page.read_text()).splitlines():
        if not line.startswith("#"):
            continue
        slug = re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        out.add(f"{slug}-{count}" if count else slug)
    return out


def test_the_readme_is_short_and_gives_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    assert "make demo" in readme
    assert "make test" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    for page in sorted(DOCS.glob("*.md")):
        assert f"(docs/{page.name})" in readme, f"README does not link {page.name}"


def test_docs_has_a_page_per_reader_question() -> None:
    assert len(list(DOCS.glob("*.md"))) >= 4


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_and_anchor_resolves(page: Path) -> None:
    for target in LINK.findall(FENCE.sub("", page.read_text())):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto: not followed here (no network in tests)
        path, _, anchor = unquote(target).partition("#")
        dest = (page.parent / path).resolve() if path else page
        assert dest.exists(), f"{page.name}: {target} does not exist"
        if anchor:
            assert dest.suffix == ".md", f"{page.name}: anchor into {dest.name}"
            assert anchor in anchors(dest), f"{page.name}: no heading for #{anchor} in {dest.name}"


def test_every_forwarder_flag_and_its_env_var_is_documented() -> None:
    page = text("forwarder.md")
    flags = [
        action.option_strings[0]
        for action in build_parser()._actions
        if action.option_strings and action.option_strings[0] != "-h"
    ]
    assert "--delivery-stream" in flags
    assert flags == [opt.flag for opt in OPTIONS]
    for opt in OPTIONS:
        assert f"`{opt.flag}" in page, opt.flag
        assert f"`{opt.env}`" in page, opt.env


def test_every_transform_setting_is_documented() -> None:
    page = text("transform.md")
    for name in ENV_VARS:
        assert re.search(rf"`{name}`[^\n]*\| `[^`]*`|`{name}` \| empty", page), name


def test_every_template_parameter_is_documented() -> None:
    page = text("deploy.md")
    for name in load_template()["Parameters"]:
        assert f"`{name}`" in page, name


MODULE_PAGES = [
    ("forwarder", "forwarder.md"),
    ("transform_lambda", "transform.md"),
    ("podhose_wire", "architecture.md"),
]


@pytest.mark.parametrize(("package", "page"), MODULE_PAGES)
def test_every_module_is_in_its_pages_module_table(package: str, page: str) -> None:
    """A reader finds where something happens by file name: every module of the package is
    named (in backticks) on a table row of its page."""
    rows = "\n".join(line for line in text(page).splitlines() if line.startswith("|"))
    named = set(re.findall(r"`([\w.]+\.py)`", rows))
    modules = {path.name for path in (ROOT / package).glob("*.py")}
    assert modules - named == set(), f"docs/{page} does not name {sorted(modules - named)}"
