"""The docs: the README is a front door under 12 KB; the reference pages are what the code
makes (hack/docs.py); every relative link resolves; every command shown that runs the
project exists with the flags shown."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from functools import cache
from pathlib import Path

import pytest

from conftest import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6} (.+?)\s*$", re.M)
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.M | re.S)


def test_the_readme_is_a_front_door():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.encode()) < 12 * 1024, f"README.md has {len(readme.encode())} bytes"
    ci = (ROOT / ".ci" / "run").read_text()
    test_command = re.search(r"^(hack/test)$", ci, re.M).group(1)
    assert f"\n{test_command}\n" in readme, "the README shows the test command .ci/run calls"
    first_screen = "\n".join(readme.splitlines()[:60])
    assert "canary-start" in first_screen, "the hand start is on the README's first screen"


def test_the_generated_reference_pages_are_current():
    proc = subprocess.run([sys.executable, str(ROOT / "hack" / "docs.py"), "--check"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_every_page_says_who_it_is_for():
    for page in PAGES[1:]:
        first = next(line for line in page.read_text().splitlines()[1:] if line.strip())
        assert first.startswith("For "), f"{page.relative_to(ROOT)} starts with {first!r}"


def slug(heading: str) -> str:
    """GitHub's heading anchor: lower case, markup and punctuation other than - and _
    dropped, spaces to dashes."""
    text = re.sub(r"[`*]|<[^>]+>", "", heading).strip().lower()
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


@cache
def anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text())
    found, seen = set(), {}
    for heading in HEADING.findall(text):
        base = slug(heading)
        n = seen.get(base, 0)
        found.add(base if n == 0 else f"{base}-{n}")
        seen[base] = n + 1
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    text = re.sub(r"`[^`\n]*`", "", FENCE.sub("", page.read_text()))  # code is not a link
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        assert resolved.exists(), f"{page.relative_to(ROOT)}: {target} does not exist"
        if anchor and resolved.suffix == ".md":
            assert anchor in anchors(resolved), f"{page.relative_to(ROOT)}: {target}: no heading #{anchor} in {resolved.name}"


def commands(text: str):
    """Each command shown in code (fenced blocks and `inline code`) that runs the project:
    (what, flags), what being steps.NAME, canary-NAME or hack/FILE."""
    inline = [code for code in re.findall(r"`([^`\n]+)`", FENCE.sub("", text)) if " " in code.strip()]  # a name is not a command
    blocks = FENCE.findall(text) + inline
    for block in blocks:
        for command in re.split(r"\n(?<!\\\n)|[|;]|&&", block.replace("\\\n", " ")):
            found = re.search(r"python3? -m (steps\.\w+)|^\s*(?:[\w.]*/)*(canary-[a-z-]+)(?![\w.-])|(?<![\w.-])(hack/[\w.-]+)", command)
            if not found:
                continue
            what = next(g for g in found.groups() if g)
            rest = command[found.end():].split("#", 1)[0]
            yield what, set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", rest))


@cache
def options_of(what: str) -> set[str] | None:
    """The flags a program takes: a step's from its --help; a hack script's from its text."""
    if what.startswith("canary-"):
        if what not in SCRIPTS:
            return None
        what = SCRIPTS[what].split(":")[0]
    if what.startswith("steps."):
        if not (ROOT / (what.replace(".", "/") + ".py")).exists():
            return None
        proc = subprocess.run([sys.executable, "-m", what, "--help"], capture_output=True, text=True, cwd=ROOT)
        assert proc.returncode == 0, proc.stderr
        return set(re.findall(r"(--[a-z][a-z0-9-]*)", proc.stdout))
    path = ROOT / what
    if not path.is_file():
        return None
    return set(re.findall(r"(--[a-z][a-z0-9-]*)", path.read_text()))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_command_shown_exists_with_its_flags(page):
    for what, flags in commands(page.read_text()):
        known = options_of(what)
        assert known is not None, f"{page.relative_to(ROOT)}: {what} does not exist"
        if what == "hack/test":  # its arguments go to pytest
            continue
        assert flags <= known | {"--help"}, f"{page.relative_to(ROOT)}: {what} has no {', '.join(sorted(flags - known))}"


def test_the_command_check_finds_what_it_checks():
    shown = "```sh\n.venv/bin/python -m steps.settings --namespace x --nope \\\n  --checkout y\nhack/docs.py --check\n```\n" \
            "and `canary-start reviews --dry-run`"
    found = dict(commands(shown))
    assert found == {"steps.settings": {"--namespace", "--nope", "--checkout"}, "hack/docs.py": {"--check"},
                     "canary-start": {"--dry-run"}}
    assert "--nope" not in options_of("steps.settings")
