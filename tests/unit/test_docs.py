"""The README and docs/ checked against the code they describe.

Every setting is documented on the configuration page and every `DARKROOM_*` name the docs mention
is a real setting; every relative link and `#anchor` resolves; every source path written in
backticks exists; the README stays a short front door that starts with `make run` and `make test`.
"""

from __future__ import annotations

import re
from pathlib import Path

from darkroom.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
CONFIGURATION_PAGE = DOCS / "configuration.md"
README_MAX_LINES = 150

# `DARKROOM_*` variables the docs may name that are not fields of `Settings`, with the reason.
NOT_SETTINGS = {
    "DARKROOM_LOG_LEVEL": "the default of the command line's --log-level, not a setting",
}

ENV_NAME = re.compile(r"\bDARKROOM_[A-Z0-9][A-Z0-9_]*\b")
FENCE = re.compile(r"^(```|~~~)")
INLINE_CODE = re.compile(r"`([^`\n]+)`")
# [text](target) and ![alt](target); a target may carry a "title" after a space.
LINK = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
SOURCE_PATH = re.compile(
    r"^(api|worker|storage|pipelines|darkroom|bench|tests|scripts|migrations|deploy)/[\w./-]+"
    r"\.(py|sh|yml|yaml|toml|json|md)$"
)


def documentation_pages() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.md"))]


def setting_env_names() -> set[str]:
    prefix = Settings.model_config.get("env_prefix", "")
    return {f"{prefix}{name}".upper() for name in Settings.model_fields}


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks."""
    lines, in_fence = [], False
    for line in text.splitlines():
        if FENCE.match(line.strip()):
            in_fence = not in_fence
            continue
        if not in_fence:
            lines.append(line)
    return lines


def fenced_blocks(text: str) -> list[list[str]]:
    blocks, current = [], None
    for line in text.splitlines():
        if FENCE.match(line.strip()):
            if current is None:
                current = []
            else:
                blocks.append(current)
                current = None
        elif current is not None:
            current.append(line)
    return blocks


def github_slug(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation dropped, spaces to '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors_of(page: Path) -> set[str]:
    anchors, seen = set(), {}
    for line in prose_lines(page.read_text(encoding="utf-8")):
        match = HEADING.match(line)
        if not match:
            continue
        slug = github_slug(match.group(2))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def relative_links(page: Path) -> list[str]:
    """Link targets in the page's prose (code spans and blocks left out), minus external URLs."""
    prose = INLINE_CODE.sub("", "\n".join(prose_lines(page.read_text(encoding="utf-8"))))
    return [
        target
        for target in LINK.findall(prose)
        if not re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target)  # http:, https:, mailto:
    ]


def test_every_setting_is_on_the_configuration_page() -> None:
    documented = set(ENV_NAME.findall(CONFIGURATION_PAGE.read_text(encoding="utf-8")))
    missing = sorted(setting_env_names() - documented)
    assert not missing, f"settings missing from {CONFIGURATION_PAGE.relative_to(ROOT)}: {missing}"


def test_every_darkroom_name_in_the_docs_is_a_setting() -> None:
    settings = setting_env_names()
    assert not settings & NOT_SETTINGS.keys(), "NOT_SETTINGS lists a real setting"
    unknown = sorted(
        f"{page.relative_to(ROOT)}: {name}"
        for page in documentation_pages()
        for name in set(ENV_NAME.findall(page.read_text(encoding="utf-8")))
        if name not in settings and name not in NOT_SETTINGS
    )
    assert not unknown, f"DARKROOM_* names that are not settings: {unknown}"


def test_every_relative_link_and_anchor_resolves() -> None:
    broken = []
    for page in documentation_pages():
        for target in relative_links(page):
            path_part, _, anchor = target.partition("#")
            linked = (page.parent / path_part).resolve() if path_part else page
            where = f"{page.relative_to(ROOT)}: ({target})"
            if not linked.exists():
                broken.append(f"{where} names a missing file")
            elif anchor and linked.suffix == ".md" and anchor not in anchors_of(linked):
                broken.append(f"{where} names no heading of {linked.name}")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_every_source_path_in_backticks_exists() -> None:
    missing = sorted(
        f"{page.relative_to(ROOT)}: {path}"
        for page in documentation_pages()
        for path in set(INLINE_CODE.findall(page.read_text(encoding="utf-8")))
        if SOURCE_PATH.match(path) and not (ROOT / path).is_file()
    )
    assert not missing, f"source paths that do not exist: {missing}"


def test_readme_is_short_and_starts_with_the_two_commands() -> None:
    text = README.read_text(encoding="utf-8")
    line_count = len(text.splitlines())
    assert line_count < README_MAX_LINES, f"README.md is {line_count} lines; move detail to docs/"
    blocks = fenced_blocks(text)
    assert blocks, "README.md has no fenced code block"
    assert [line.strip() for line in blocks[0]] == ["make run", "make test"], (
        f"README.md's first code block must be exactly `make run` and `make test`, not {blocks[0]}"
    )
