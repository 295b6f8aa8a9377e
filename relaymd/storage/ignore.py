"""`.relaymdignore`: gitignore-style patterns for what a job bundle leaves out.

The subset of gitignore(5) implemented: `#` comments and blank lines, `*` and `?` (not across
`/`), `[...]` classes, `**` (`**/x`, `x/**`, `a/**/b`), a `/` at the start or middle anchors
the pattern at the job folder (else it matches at any depth), a trailing `/` matches folders
only, `!` re-includes, `\\` escapes, the last matching line wins. As in git, nothing inside an
ignored folder can be re-included (the folder is not even read).
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict

IGNORE_FILE = ".relaymdignore"


class IgnoreRule(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    pattern: str  # as written, for messages
    regex: re.Pattern[str]
    negated: bool
    dirs_only: bool


def _class(pattern: str, start: int) -> tuple[str, int] | None:
    """The regex of a `[...]` class starting at `start`, and the index after it."""
    end = start + 1
    if end < len(pattern) and pattern[end] in "!^":
        end += 1
    if end < len(pattern) and pattern[end] == "]":
        end += 1
    end = pattern.find("]", end)
    if end < 0:
        return None
    body = pattern[start + 1 : end]
    if body[:1] in ("!", "^"):
        body = "^" + body[1:]
    return "[" + body.replace("\\", "\\\\") + "]", end + 1


def _translate(pattern: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i) and (i == 0 or pattern[i - 1] == "/"):
            out.append("(?:.*/)?")
            i += 3
        elif (
            pattern.startswith("**", i)
            and i + 2 == len(pattern)
            and (i == 0 or pattern[i - 1] == "/")
        ):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and (found := _class(pattern, i)) is not None:
            out.append(found[0])
            i = found[1]
        elif pattern[i] == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return "".join(out)


def parse_rule(line: str) -> IgnoreRule | None:
    text = line.rstrip("\n")
    # Trailing spaces are ignored unless escaped.
    while text.endswith(" ") and not text.endswith("\\ "):
        text = text[:-1]
    if not text or text.startswith("#"):
        return None
    negated = text.startswith("!")
    body = text[1:] if negated else text
    if body.startswith("\\") and body[1:2] in ("#", "!"):
        body = body[1:]
    dirs_only = body.endswith("/")
    body = body.rstrip("/")
    if not body:
        return None
    anchored = "/" in body
    body = body.removeprefix("/")
    prefix = "" if anchored else "(?:.*/)?"
    regex = re.compile("^" + prefix + _translate(body) + "$", re.DOTALL)
    return IgnoreRule(pattern=text, regex=regex, negated=negated, dirs_only=dirs_only)


class IgnoreRules(BaseModel):
    rules: list[IgnoreRule]

    @classmethod
    def parse(cls, text: str) -> IgnoreRules:
        return cls(rules=[r for line in text.splitlines() if (r := parse_rule(line)) is not None])

    @classmethod
    def of_folder(cls, folder: Path) -> IgnoreRules:
        """The rules of `folder/.relaymdignore`; none when it has no such file."""
        path = folder / IGNORE_FILE
        return cls.parse(path.read_text()) if path.is_file() else cls(rules=[])

    def ignored(self, name: str, is_dir: bool) -> bool:
        """Whether the POSIX path `name` (relative to the job folder) is left out."""
        verdict = False
        for rule in self.rules:
            if rule.dirs_only and not is_dir:
                continue
            if rule.regex.match(name):
                verdict = not rule.negated
        return verdict
