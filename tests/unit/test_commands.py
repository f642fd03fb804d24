"""Command parsing (SPEC §4.2)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.commands import (
    VERBS,
    Command,
    first_command,
    mentions_bot,
    normalize_mentions,
    parse_commands,
    prose_lines,
)

MENTIONS = ("patchwright", "pw")


def verbs(body: str, mentions: tuple[str, ...] = MENTIONS) -> list[tuple[str, str]]:
    return [(c.verb, c.args) for c in parse_commands(body, mentions=mentions)]


# (id, body, expected [(verb, args)])
CASES = [
    # -- the verbs
    ("retry", "@patchwright retry", [("retry", "")]),
    ("stop", "@patchwright stop", [("stop", "")]),
    ("resume", "@patchwright resume", [("resume", "")]),
    ("start over", "@patchwright start over", [("start over", "")]),
    ("start-over", "@patchwright start-over", [("start over", "")]),
    ("startover", "@patchwright startover", [("start over", "")]),
    ("start  over spaces", "@patchwright start   over", [("start over", "")]),
    ("cancel", "@patchwright cancel", [("cancel", "")]),
    ("status", "@patchwright status", [("status", "")]),
    ("help", "@patchwright help", [("help", "")]),
    ("verb case", "@patchwright RETRY", [("retry", "")]),
    ("verb punctuation", "@patchwright stop.", [("stop", "")]),
    ("verb question mark", "@patchwright status?", [("status", "")]),
    ("verb exclamation", "@patchwright cancel!", [("cancel", "")]),
    ("please prefix", "@patchwright please retry", [("retry", "")]),
    ("please suffix on cancel", "@patchwright cancel please", [("cancel", "")]),
    ("now on start over", "@patchwright start over now, thanks!", [("start over", "")]),
    ("colon after mention", "@patchwright: retry", [("retry", "")]),
    ("comma after mention", "@patchwright, status", [("status", "")]),
    ("dash after mention", "@patchwright - stop", [("stop", "")]),
    ("trailing spaces", "@patchwright stop   ", [("stop", "")]),
    # -- retry instructions
    ("retry with instructions", "@patchwright retry use the v2 API", [("retry", "use the v2 API")]),
    ("retry colon instructions", "@patchwright retry: use the v2 API", [("retry", "use the v2 API")]),
    (
        "retry multi-line instructions",
        "@patchwright retry and\nalso fix the docs\n\nthanks",
        [("retry", "and\nalso fix the docs\n\nthanks")],
    ),
    (
        "retry instructions on following lines only",
        "@patchwright retry\n\nKeep the public API.\n",
        [("retry", "Keep the public API.")],
    ),
    (
        "retry instructions keep a code block",
        "@patchwright retry with this:\n```python\nx = 1  # @patchwright stop\n```",
        [("retry", "with this:\n```python\nx = 1  # @patchwright stop\n```")],
    ),
    (
        "retry instructions end at the next command",
        "@patchwright retry fix it\nlike this\n@patchwright status\nignored",
        [("retry", "fix it\nlike this"), ("status", "")],
    ),
    ("retrying is not retry", "@patchwright retrying soon?", [("feedback", "retrying soon?")]),
    ("retry-later", "@patchwright retry-later", [("feedback", "retry-later")]),
    # -- non-retry verbs take the rest of the line only
    ("stop with text", "@patchwright stop, I want to look first\nmore text", [("stop", "I want to look first")]),
    ("stop please", "@patchwright stop please", [("stop", "")]),
    ("retry please", "@patchwright retry, please.", [("retry", "")]),
    ("status with text", "@patchwright status of CI", [("status", "of CI")]),
    # -- destructive verbs with real text are feedback
    (
        "cancel with text is feedback",
        "@patchwright cancel the timer when the socket closes",
        [("feedback", "cancel the timer when the socket closes")],
    ),
    (
        "start over with text is feedback",
        "@patchwright start over from the parser module",
        [("feedback", "start over from the parser module")],
    ),
    # -- feedback / unknown
    ("feedback", "@patchwright rename foo to bar", [("feedback", "rename foo to bar")]),
    (
        "feedback multi-line",
        "@patchwright please\n- rename foo\n- add a test",
        [("feedback", "please\n- rename foo\n- add a test")],
    ),
    ("bare mention", "@patchwright", [("feedback", "")]),
    ("thanks is empty feedback", "@patchwright thanks! 🎉", [("feedback", "")]),
    ("thank you multi-line is empty", "@patchwright thank you\n\n:)", [("feedback", "")]),
    ("thanks plus a request", "@patchwright thanks, now add a test", [("feedback", "thanks, now add a test")]),
    ("bare mention then text", "@patchwright\nRename foo.", [("feedback", "Rename foo.")]),
    # -- mention forms
    ("mention case", "@PatchWright stop", [("stop", "")]),
    ("mention [bot]", "@patchwright[bot] stop", [("stop", "")]),
    ("mention [BOT] case", "@Patchwright[BOT] stop", [("stop", "")]),
    ("alias", "@pw stop", [("stop", "")]),
    ("alias is a word boundary", "@pwx stop", []),
    ("longer login", "@patchwright-dev stop", []),
    ("team mention", "@patchwright/maintainers stop", []),
    ("underscore continues a name", "@patchwright_ stop", []),
    ("mention followed by colon at end", "@patchwright:", [("feedback", "")]),
    ("mention not at line start", "hey @patchwright stop", []),
    ("email is not a mention", "foo@patchwright stop", []),
    ("escaped mention", "\\@patchwright stop", []),
    ("double at", "@@patchwright stop", []),
    # -- leading whitespace
    ("indent 1", " @patchwright stop", [("stop", "")]),
    ("indent 3", "   @patchwright stop", [("stop", "")]),
    ("indent 4 at start is code", "    @patchwright stop", []),
    ("tab at start is code", "\t@patchwright stop", []),
    ("indent 4 after blank is code", "text\n\n    @patchwright stop", []),
    ("indent 4 continuing a paragraph is prose", "text\n    @patchwright stop", [("stop", "")]),
    (
        "indented code block continues over blank lines",
        "\n    code\n\n    @patchwright stop\nafter\n@patchwright status",
        [("status", "")],
    ),
    # -- fenced code
    ("backtick fence", "```\n@patchwright stop\n```", []),
    ("tilde fence", "~~~\n@patchwright stop\n~~~", []),
    ("fence with info string", "```bash title=x\n@patchwright stop\n```\n@pw status", [("status", "")]),
    ("indented fence opener", "   ```\n@patchwright stop\n   ```", []),
    ("fence 4 spaces is not a fence", "text\n    ```\n@patchwright stop", [("stop", "")]),
    ("unclosed fence runs to the end", "```\n@patchwright stop\n\n@patchwright status", []),
    ("shorter closer does not close", "````\n```\n@patchwright stop\n````\n@pw help", [("help", "")]),
    ("other fence char does not close", "~~~\n```\n@patchwright stop\n~~~\n@pw help", [("help", "")]),
    ("closer with text is not a closer", "```\n``` x\n@patchwright stop\n```", []),
    ("backtick info with backtick is not a fence", "``` a`b\n@patchwright stop", [("stop", "")]),
    ("tilde info may hold backticks", "~~~ a`b\n@patchwright stop\n~~~", []),
    ("after a closed fence", "```\ncode\n```\n@patchwright stop", [("stop", "")]),
    ("crlf fence", "```\r\n@patchwright stop\r\n```\r\n@patchwright status\r\n", [("status", "")]),
    # -- block quotes
    ("quote", "> @patchwright stop", []),
    ("quote no space", ">@patchwright stop", []),
    ("nested quote", "> > @patchwright stop", []),
    ("indented quote", "  > @patchwright stop", []),
    ("quoted then real", "> @patchwright cancel\n\n@patchwright status", [("status", "")]),
    ("fence inside quote does not swallow", "> ```\n@patchwright stop", [("stop", "")]),
    # -- inline code and HTML comments
    ("inline code", "`@patchwright stop`", []),
    ("inline code double ticks", "``@patchwright stop``", []),
    ("html comment one line", "<!-- @patchwright stop -->", []),
    ("html comment multi-line", "<!--\n@patchwright cancel\n-->\n@patchwright status", [("status", "")]),
    ("unclosed html comment", "<!--\n@patchwright cancel", []),
    ("comment marker in inline code", "use `<!--` here\n@patchwright stop", [("stop", "")]),
    # -- several commands
    ("two commands", "@patchwright stop\n@pw status", [("stop", ""), ("status", "")]),
    (
        "commands among prose",
        "Thanks!\n\n@patchwright status\n\nAnd then:\n@patchwright help",
        [("status", ""), ("help", "")],
    ),
    # -- nothing
    ("empty", "", []),
    ("only prose", "LGTM, nice work", []),
    ("crlf", "@patchwright retry fix\r\nthe tests\r\n", [("retry", "fix\nthe tests")]),
]


@pytest.mark.parametrize("body,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_parse_commands(body: str, expected: list[tuple[str, str]]) -> None:
    assert verbs(body) == expected


def test_case_ids_are_unique() -> None:
    ids = [c[0] for c in CASES]
    assert len(ids) == len(set(ids))


def test_command_fields() -> None:
    body = "Hello\n\n  @patchwright retry use X\nand Y\n"
    assert parse_commands(body, mentions=["patchwright"]) == [
        Command(verb="retry", args="use X\nand Y", line_no=3, raw="  @patchwright retry use X")
    ]
    assert parse_commands(body, mentions=["patchwright"])[0].text == "use X\nand Y"


def test_first_command() -> None:
    body = "@pw status\n@pw stop"
    command = first_command(body, mentions=MENTIONS)
    assert command is not None and command.verb == "status"
    assert first_command("no commands", mentions=MENTIONS) is None
    assert first_command(None, mentions=MENTIONS) is None


@pytest.mark.parametrize(
    "mentions",
    [("patchwright",), ("patchwright[bot]",), ("@patchwright",), ("@PatchWright[bot]",), (" patchwright ",)],
)
def test_slug_given_in_any_form(mentions: tuple[str, ...]) -> None:
    assert verbs("@patchwright stop", mentions) == [("stop", "")]
    assert verbs("@patchwright[bot] stop", mentions) == [("stop", "")]


def test_no_mentions_configured_means_no_commands() -> None:
    assert parse_commands("@patchwright stop", mentions=[]) == []
    assert parse_commands("@patchwright stop", mentions=["", "@"]) == []
    assert mentions_bot("@patchwright", []) is False


def test_alias_that_prefixes_the_slug() -> None:
    # "patch" is an alias; "@patchwright" must still be read as the longer name.
    assert verbs("@patchwright stop", ("patch", "patchwright")) == [("stop", "")]
    assert verbs("@patch stop", ("patch", "patchwright")) == [("stop", "")]


def test_alias_with_regex_characters() -> None:
    assert verbs("@a.b stop", ("a.b",)) == [("stop", "")]
    assert verbs("@axb stop", ("a.b",)) == []


def test_normalize_mentions() -> None:
    assert normalize_mentions(["@PatchWright[bot]", "pw", "patchwright", "", "@"]) == ("patchwright", "pw")


def test_every_verb_is_recognised() -> None:
    for verb in VERBS:
        assert verbs(f"@patchwright {verb}") == [(verb, "")]


# (id, body, expected)
MENTION_CASES = [
    ("command", "@patchwright stop", True),
    ("inside a sentence", "thanks @patchwright, great job", True),
    ("end of sentence", "ask @patchwright.", True),
    ("bot form", "cc @patchwright[bot]", True),
    ("alias", "cc @pw", True),
    ("in inline code", "use `@patchwright retry` to retry", False),
    ("in fence", "```\n@patchwright\n```", False),
    ("in quote", "> @patchwright did this", False),
    ("in html comment", "<!-- @patchwright -->", False),
    ("after html comment on the same line", "<!-- x --> @patchwright", True),
    ("in multi-line html comment", "<!--\n@patchwright\n-->", False),
    ("text after multi-line comment closes", "<!--\nx\n--> cc @patchwright", True),
    ("email", "mail foo@patchwright.dev", False),
    ("longer login", "@patchwright-fan says hi", False),
    ("nothing", "no mention here", False),
    ("empty", "", False),
]


@pytest.mark.parametrize("body,expected", [c[1:] for c in MENTION_CASES], ids=[c[0] for c in MENTION_CASES])
def test_mentions_bot(body: str, expected: bool) -> None:
    assert mentions_bot(body, MENTIONS) is expected


def test_prose_lines_marks_code_and_quotes() -> None:
    body = "a\n```\nb\n```\n> c\n\n    d\ne `f` g"
    visible = [(n, v) for n, _, v in prose_lines(body)]
    assert visible == [(1, "a"), (2, ""), (3, ""), (4, ""), (5, ""), (6, ""), (7, ""), (8, "e     g")]


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("@patchwright retry stop`~>\n -<!:[]bot\t")), max_size=200))
def test_parser_never_fails_and_commands_are_on_mention_lines(body: str) -> None:
    commands = parse_commands(body, mentions=MENTIONS)
    lines = body.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    for command in commands:
        assert command.raw == lines[command.line_no - 1]
        assert command.raw.lstrip(" \t").lower().startswith(("@patchwright", "@pw"))
        assert command.verb in VERBS or command.verb == "feedback"


def test_pathological_backticks_are_fast() -> None:
    body = ("`" * 5000 + " @patchwright x ") * 4 + "\n@patchwright stop"
    assert verbs(body) == [("stop", "")]
