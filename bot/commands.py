"""Command parsing for comments addressed to the bot (SPEC §4.2). Pure, no I/O.

A command is a line that starts, after at most three spaces of indentation, with a mention of
the bot (``@<app-slug>``, ``@<app-slug>[bot]`` or a configured alias, case-insensitive)
followed by a word boundary. Lines inside fenced code blocks (````` ``` ````` and ``~~~``),
indented code blocks, HTML comments and block quotes (``>`` lines) never carry commands, and
a mention inside an inline code span does not count as a mention.

Verbs: ``retry [instructions]``, ``stop``, ``resume``, ``start over``, ``cancel``, ``status``
and ``help``. Anything else after the mention is a ``feedback`` command whose text the handler
treats as review feedback (on the task's PR) or as answers (on the issue while waiting).
``retry`` instructions and ``feedback`` text run from the rest of the mention line through
the following lines up to the next command or the end of the comment; text made only of
punctuation and politeness ("thanks!") counts as empty, so it asks for nothing.

The destructive verbs ``cancel`` and ``start over`` only count when nothing but punctuation or
"please"/"now"/"thanks" follows them on the line, so that "@bot cancel the timer on close"
is feedback rather than a request to close the task and delete its branch.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from bot.tasks import verbs as _verbs
from bot.tasks.verbs import CANCEL, HELP, RESUME, RETRY, START_OVER, STATUS, STOP

FEEDBACK = "feedback"

VERBS: tuple[str, ...] = _verbs.NAMES
"""The named commands, in the order the help text lists them (from the verb table)."""

MULTILINE_VERBS = frozenset({FEEDBACK, *(v.name for v in _verbs.TASK_VERBS if v.takes_text)})
"""Verbs whose text continues on the following lines up to the next command."""

DESTRUCTIVE_VERBS = frozenset(v.name for v in _verbs.TASK_VERBS if v.destructive)
"""Verbs that only count with nothing but punctuation or politeness after them."""


@dataclass(frozen=True, slots=True)
class Command:
    """One command found in a comment body.

    ``verb`` is one of :data:`VERBS` or ``"feedback"``; ``args`` is the text after the verb
    (for ``retry`` and ``feedback`` including the following lines); ``line_no`` is the
    1-based line of the mention; ``raw`` is that line as written.
    """

    verb: str
    args: str
    line_no: int
    raw: str

    @property
    def text(self) -> str:
        """The free text of the command (same as ``args``)."""
        return self.args


# -- mentions ---------------------------------------------------------------------------

_LOGIN_CHAR = r"A-Za-z0-9_\-"


def normalize_mentions(mentions: Iterable[str]) -> tuple[str, ...]:
    """Lower-cased names without ``@`` or ``[bot]``, longest first, duplicates and blanks removed."""
    names: set[str] = set()
    for mention in mentions:
        name = mention.strip().lstrip("@").strip().lower()
        name = name.removesuffix("[bot]")
        if name:
            names.add(name)
    return tuple(sorted(names, key=lambda n: (-len(n), n)))


def _mention_pattern(mentions: Iterable[str]) -> re.Pattern[str] | None:
    names = normalize_mentions(mentions)
    if not names:
        return None
    alternatives = "|".join(re.escape(n) for n in names)
    # "@name" or "@name[bot]", not followed by a login character, "/" (team mentions) or "[".
    return re.compile(
        rf"(?<![{_LOGIN_CHAR}@`\\])@(?:{alternatives})(?:\[bot\])?(?![{_LOGIN_CHAR}/\[])",
        re.IGNORECASE,
    )


# -- which lines are prose --------------------------------------------------------------

_FENCE_OPEN = re.compile(r"^( {0,3})(`{3,}|~{3,})(.*)$")
_QUOTE = re.compile(r"^ {0,3}>")


def _indent_width(line: str) -> int:
    width = 0
    for ch in line:
        if ch == " ":
            width += 1
        elif ch == "\t":
            width += 4 - width % 4
        else:
            break
    return width


def _mask_code_spans(line: str) -> str:
    return _CODE_SPAN.sub(lambda m: " " * len(m.group(0)), line)


def _mask_html_comments(line: str) -> str:
    return _HTML_COMMENT.sub(lambda m: " " * len(m.group(0)), line)


def _is_closing_fence(line: str, char: str, length: int) -> bool:
    stripped = line.lstrip(" ")
    if len(line) - len(stripped) > 3:
        return False
    run = stripped.rstrip()
    return len(run) >= length and set(run) == {char}


def prose_lines(body: str) -> list[tuple[int, str, str]]:
    """Split ``body`` into ``(line_no, line, visible)``.

    ``visible`` is the part of the line that renders as prose, the same length as ``line``
    with inline code spans and HTML comments blanked out; it is empty for lines in fenced
    or indented code blocks, multi-line HTML comments and block quotes.
    """
    lines = body.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    out: list[tuple[int, str, str]] = []
    fence: tuple[str, int] | None = None  # (fence char, length) of the open fence
    in_html_comment = False
    in_indented_code = False
    previous_blank = True  # the start of the document acts as a blank line
    for index, line in enumerate(lines, start=1):
        blank = not line.strip()
        if fence is not None:
            if _is_closing_fence(line, *fence):
                fence = None
                previous_blank = True  # an indented line after a closed fence is code
            else:
                previous_blank = False
            out.append((index, line, ""))
            continue
        if in_html_comment:
            visible = ""
            masked = _mask_code_spans(line)
            closed = masked.find("-->")
            if closed != -1:
                visible = _mask_html_comments(" " * (closed + 3) + masked[closed + 3 :])
                in_html_comment = _opens_html_comment(masked[closed + 3 :])
            out.append((index, line, visible))
            previous_blank = blank
            continue
        if in_indented_code:
            if blank or _indent_width(line) >= 4:
                out.append((index, line, ""))
                previous_blank = blank
                continue
            in_indented_code = False
        if not blank and _indent_width(line) >= 4 and previous_blank:
            in_indented_code = True
            out.append((index, line, ""))
            previous_blank = False
            continue
        match = _FENCE_OPEN.match(line)
        if match and not (match.group(2)[0] == "`" and "`" in match.group(3)):
            # (an info string after backticks may not contain backticks)
            fence = (match.group(2)[0], len(match.group(2)))
            out.append((index, line, ""))
            previous_blank = False
            continue
        if _QUOTE.match(line):
            out.append((index, line, ""))
            previous_blank = False
            continue
        masked = _mask_code_spans(line)
        in_html_comment = _opens_html_comment(masked)
        out.append((index, line, _mask_html_comments(masked)))
        previous_blank = blank
    return out


def _opens_html_comment(masked: str) -> bool:
    """Whether ``masked`` (code spans blanked) leaves an HTML comment open at its end."""
    opened = masked.rfind("<!--")
    return opened != -1 and "-->" not in masked[opened + 4 :]


_CODE_SPAN = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)")
_HTML_COMMENT = re.compile(r"<!--.*?(?:-->|$)")


def mentions_bot(body: str | None, mentions: Sequence[str]) -> bool:
    """Whether ``body`` mentions the bot anywhere outside code, quotes and HTML comments."""
    pattern = _mention_pattern(mentions)
    if pattern is None or not body:
        return False
    return any(pattern.search(visible) for _, _, visible in prose_lines(body))


# -- commands ---------------------------------------------------------------------------

def _verb_pattern(name: str) -> str:
    """``start over`` also reads as ``start-over`` and ``startover``."""
    return r"[ \t]*-?[ \t]*".join(re.escape(word) for word in name.split())


# Longest first, so that a verb that begins with another verb's word wins.
_VERB_NAMES = sorted(VERBS, key=len, reverse=True)
_VERB = re.compile(
    r"^(?:please[\s,]+)?"
    rf"(?P<verb>{'|'.join(_verb_pattern(name) for name in _VERB_NAMES)})"
    r"(?=$|[\s.,:;!?)\]])",
    re.IGNORECASE,
)
_BY_SQUEEZED = {name.replace(" ", ""): name for name in VERBS}
_SEPARATOR = re.compile(r"^[\s:,;\-–—]+")
_TRIVIAL_REST = re.compile(
    r"^[\W_]*(?:(?:please|now|thanks|thx|thank\s+you)[\W_]*)*$", re.IGNORECASE
)


def _classify(after_mention: str) -> tuple[str, str]:
    """Return ``(verb, rest of line)`` for the text after a mention."""
    text = _SEPARATOR.sub("", after_mention).rstrip()
    match = _VERB.match(text)
    if match is None:
        return FEEDBACK, text
    verb = _BY_SQUEEZED[re.sub(r"[\s-]", "", match.group("verb").lower())]
    rest = _SEPARATOR.sub("", text[match.end() :]).strip()
    if _TRIVIAL_REST.match(rest):
        return verb, ""  # punctuation or politeness only
    if verb in DESTRUCTIVE_VERBS:
        return FEEDBACK, text
    return verb, rest


def parse_commands(body: str | None, *, mentions: Sequence[str]) -> list[Command]:
    """Every command in ``body``, in order (see the module docstring for the rules)."""
    if not body:
        return []
    pattern = _mention_pattern(mentions)
    if pattern is None:
        return []
    lines = prose_lines(body)
    found: list[tuple[int, str, str]] = []  # (index into lines, verb, rest of line)
    for position, (_, line, visible) in enumerate(lines):
        if not visible.strip():
            continue
        offset = len(line) - len(line.lstrip(" \t"))
        match = pattern.match(visible, offset)
        if match is None:
            continue
        verb, rest = _classify(line[match.end() :])
        found.append((position, verb, rest))

    commands: list[Command] = []
    for number, (position, verb, rest) in enumerate(found):
        line_no, raw, _ = lines[position]
        args = rest
        if verb in MULTILINE_VERBS:
            end = found[number + 1][0] if number + 1 < len(found) else len(lines)
            following = [text for _, text, _ in lines[position + 1 : end]]
            args = _join_text(rest, following)
            if _TRIVIAL_REST.match(args):
                args = ""  # "@bot thanks!" asks for nothing
        commands.append(Command(verb=verb, args=args, line_no=line_no, raw=raw))
    return commands


def first_command(body: str | None, *, mentions: Sequence[str]) -> Command | None:
    """The first command in ``body``, or None."""
    commands = parse_commands(body, mentions=mentions)
    return commands[0] if commands else None


def _join_text(first: str, following: list[str]) -> str:
    """The rest of the command line plus the following lines, outer blank lines removed."""
    parts = ([first] if first else []) + [line.rstrip() for line in following]
    while parts and not parts[0].strip():
        parts.pop(0)
    while parts and not parts[-1].strip():
        parts.pop()
    return "\n".join(parts)


__all__ = [
    "CANCEL",
    "DESTRUCTIVE_VERBS",
    "FEEDBACK",
    "HELP",
    "MULTILINE_VERBS",
    "RESUME",
    "RETRY",
    "START_OVER",
    "STATUS",
    "STOP",
    "VERBS",
    "Command",
    "first_command",
    "mentions_bot",
    "normalize_mentions",
    "parse_commands",
    "prose_lines",
]
