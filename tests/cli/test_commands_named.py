"""Every `patchwright …` command a text suggests exists, and README's command table is the
command line's (issue 15).

A suggestion is a code span (or a shell line of README) that starts a command with
``patchwright ``: each is parsed by the real parser, with its placeholders (``ID``, ``FILE``,
``{repo}``, an f-string's value…) filled with a value the argument takes. The texts are the
messages of ``bot/messages``, the operator commands, the operations, the web surface, the
command line's errors and README; and the reasons of the task rules as the command line
words them (their ``{bot} <verb>`` become ``patchwright tasks …`` commands).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import io
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot import admin, messages
from bot.__main__ import _parser
from bot.messages import reasons
from bot.tasks import verbs
from bot.tasks.model import Status, Task, utcnow
from bot.tasks.verbs import CommandInput

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
#: Where messages live (a missing path is skipped: some are added by work in progress).
PYTHON_SOURCES = ("bot/messages", "bot/admin.py", "bot/operations", "bot/web", "bot/errors.py",
                  "bot/__main__.py", "bot/doctor.py")

#: Code spans that name patchwright things that are no commands.
NOT_COMMANDS = {messages.CONTROL_CHECK_RUN_NAME}  # the check run with the Stop button

SPAN = re.compile(r"`([^`\n]+)`")
#: ``patchwright`` as a command word: not part of a path, a mention, a name or a setting.
COMMAND = re.compile(r"(?<![\w@/.=-])patchwright (?P<args>.*)$")
#: A placeholder for a value: ID, FILE, N, {repo}, <verb>.
PLACEHOLDER = re.compile(r"[A-Z][A-Z0-9_]*|\{[^}]*\}|<[^>]+>")


# -- finding suggestions -----------------------------------------------------------------------


def commands_in(text: str) -> Iterator[str]:
    """The ``patchwright …`` commands of ``text``'s code spans (without the ``patchwright``)."""
    for span in SPAN.findall(text.replace("\\|", "|")):
        if span.strip() in NOT_COMMANDS:
            continue
        if (m := COMMAND.search(span)) is not None:
            yield m["args"].strip()


def _python_texts(path: Path) -> Iterator[str]:
    """The string literals of a module (an f-string with ``X`` for each value), without
    docstrings and other bare string statements, which are documentation, not messages."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docs = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr)}
    parts = {id(v) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for v in node.values}
    for node in ast.walk(tree):
        if id(node) in docs:
            continue
        if isinstance(node, ast.JoinedStr):
            yield "".join(v.value if isinstance(v, ast.Constant) else "X" for v in node.values)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in parts:
            yield node.value


def _python_files() -> Iterator[Path]:
    for name in PYTHON_SOURCES:
        path = ROOT / name
        if path.is_dir():
            yield from sorted(path.rglob("*.py"))
        elif path.is_file():
            yield path


def _markdown_commands(path: Path) -> Iterator[str]:
    fenced = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            yield from commands_in(line)
            continue
        command = line.split("  #", 1)[0]  # a shell comment
        if (m := re.search(r"(?:^|\$ |&& |; )patchwright (?P<args>.*)$", command)) is not None:
            yield m["args"].strip()


def suggestions() -> list[tuple[str, str]]:
    """(where, command) of every suggestion in the source texts and README."""
    found = [
        (str(path.relative_to(ROOT)), command)
        for path in _python_files()
        for text in _python_texts(path)
        for command in commands_in(text)
    ]
    found += [("README.md", command) for command in _markdown_commands(README)]
    return sorted(set(found))


# -- parsing one -------------------------------------------------------------------------------


def _subcommands(parser: argparse.ArgumentParser) -> argparse._SubParsersAction | None:
    return next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)


def argv_of(command: str) -> list[str]:
    """``command`` (the words after ``patchwright``) as argv for :func:`_parser`: optional
    parts given, the first of alternatives taken, placeholders filled with a value their
    argument takes (the first choice, else ``1``)."""
    words = [w.split("|")[0] for w in command.replace("[", " ").replace("]", " ").split() if w not in ("…", "...")]
    parser: argparse.ArgumentParser = _parser()
    option: argparse.Action | None = None
    argv: list[str] = []
    for word in words:
        if PLACEHOLDER.fullmatch(word):
            choices = option.choices if option is not None else None
            argv.append(str(next(iter(choices))) if choices else "1")
            option = None
            continue
        argv.append(word)
        option = parser._option_string_actions.get(word) if word.startswith("-") else None
        sub = _subcommands(parser)
        if sub is not None and word in sub.choices:
            parser = sub.choices[word]
    return argv


def parse_error(command: str) -> str | None:
    """Why ``patchwright <command>`` does not parse, or None when it does. A suggestion may
    name a command without its required arguments (``patchwright setup`` writes them): only
    an unknown command, option or value, or a value it does not take, is an error."""
    argv = argv_of(command)
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            _parser().parse_args(argv)
    except SystemExit as exc:
        error = stderr.getvalue().strip().splitlines()[-1] if stderr.getvalue().strip() else ""
        if exc.code not in (0, None) and "the following arguments are required" not in error:
            return f"{argv}: {error}"  # --help and --version exit 0
    return None


def test_the_parse_check_catches_a_command_that_does_not_exist():
    assert parse_error("start over") is not None  # the suggestion that started this
    assert parse_error("tasks start over ID") is not None
    assert parse_error("tasks frobnicate ID") is not None
    assert parse_error("tasks show") is None  # the command, named without its ID
    assert parse_error("tasks show ID --jsn") is not None
    assert parse_error("tasks list --status STATUS") is None and parse_error("tasks list --status nope") is not None
    assert parse_error("tasks start-over ID") is None
    assert parse_error("tasks list [--status STATUS] [--json]") is None
    assert parse_error("emulator [--ci-provider actions|external]") is None
    assert list(commands_in("Use `@patchwright start over`, see `patchwright controls` or `.github/patchwright.yml`")) == []
    assert list(commands_in("x `PATCHWRIGHT_DATABASE_URL=sqlite:///a/patchwright.db patchwright deliveries list` y")) == [
        "deliveries list"
    ]


# -- the texts -----------------------------------------------------------------------------------


def test_texts_and_readme_suggest_some_commands():
    """The search finds what it looks for (a broken search would pass everything below)."""
    where = {w for w, _ in suggestions()}
    assert "README.md" in where and "bot/admin.py" in where and "bot/messages/reasons.py" not in where
    assert ("bot/admin.py", "tasks list") in suggestions()


@pytest.mark.parametrize(("where", "command"), suggestions())
def test_every_suggested_command_exists(where: str, command: str):
    assert parse_error(command) is None, f"{where} suggests `patchwright {command}`, which does not parse"


def _reason_templates() -> list[str]:
    """The reasons' templates that suggest a command (``{bot} <verb>``)."""
    texts = _python_texts(Path(reasons.__file__))
    return sorted({t for t in texts if reasons.MENTION_PLACEHOLDER + " " in t})


@pytest.mark.parametrize("template", _reason_templates(), ids=lambda t: t[:48])
def test_the_command_line_words_every_suggestion_of_a_reason_as_a_command(template: str):
    """A rule's reason suggests comment commands (``{bot} start over``); on the command line
    each becomes the ``patchwright tasks …`` command that does the same, and parses."""
    text = admin.cli_reason(template, "task_01abc", "@patchwright")
    assert reasons.MENTION_PLACEHOLDER not in text and "@patchwright" not in text, text
    found = list(commands_in(text))
    assert found, text
    for command in found:
        assert command.startswith("tasks ") and parse_error(command) is None, (template, command)


def _task(status: Status) -> Task:
    return Task(id="task_01abc", repo="o/r", installation_id=1, issue_number=7, title="t", status=status,
                pr_number=12 if status in (Status.REVIEW, Status.MERGED, Status.CLOSED) else None, max_cost_usd=3.0)


@pytest.mark.parametrize("status", list(Status))
def test_every_refusal_of_a_task_command_names_commands_that_exist(status: Status):
    """What `patchwright tasks <verb>` prints when the rule refuses, for every verb and
    status; e.g. stopping a merged task suggests `patchwright tasks start-over ID`."""
    task = _task(status)
    for verb in verbs.TASK_VERBS:
        decision = verb.decide(task, CommandInput(now=utcnow(), author=admin.ACTOR))
        if decision.accepted:
            continue
        text = admin.cli_reason(decision.reason, task.id, "@patchwright")
        assert "@patchwright" not in text and "{bot}" not in text, text
        for command in commands_in(text):
            assert parse_error(command) is None, (verb.name, status, text)


def test_stopping_a_merged_task_suggests_the_start_over_command_that_exists():
    decision = verbs.BY_NAME[verbs.STOP].decide(_task(Status.MERGED), CommandInput(now=utcnow(), author="cli"))
    text = admin.cli_reason(decision.reason, "task_01abc", "@patchwright")
    assert text == "Cannot stop: this task is merged. Use `patchwright tasks start-over task_01abc` to begin again."


# -- README's command table ------------------------------------------------------------------------


def _visible(parser: argparse.ArgumentParser) -> set[str]:
    """The subcommands ``--help`` lists."""
    sub = _subcommands(parser)
    assert sub is not None
    return {a.dest for a in sub._choices_actions if a.help != argparse.SUPPRESS}


def _readme_table() -> list[list[str]]:
    """The commands of README's "On the server" table, as words after ``patchwright``."""
    text = README.read_text(encoding="utf-8")
    section = text.split("### On the server", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        if line.startswith("| `patchwright ") and (m := SPAN.search(line)) is not None:
            rows.append(m[1].replace("\\|", "|").split()[1:])
    return rows


def test_readme_lists_every_command_of_help():
    parser = _parser()
    rows = [words for words in _readme_table() if words and not words[0].startswith("-")]
    _same("patchwright", {words[0] for words in rows}, _visible(parser))
    sub = _subcommands(parser)
    assert sub is not None
    for group in ("tasks", "deliveries"):
        listed = {words[1] for words in rows if words[0] == group and len(words) > 1}
        _same(f"patchwright {group}", listed, _visible(sub.choices[group]))


def _same(command: str, in_readme: set[str], in_help: set[str]) -> None:
    missing, extra = sorted(in_help - in_readme), sorted(in_readme - in_help)
    assert not missing and not extra, (
        f"README's command table and `{command} --help` differ: no row for {missing}, rows for unknown {extra}"
    )


def test_readme_has_one_row_per_command():
    keys = [words[0] if words[0] not in ("tasks", "deliveries") else " ".join(words[:2]) for words in _readme_table()]
    assert sorted(k for k in set(keys) if keys.count(k) > 1) == [], "README's command table repeats a command"


def test_readme_table_rows_parse():
    for words in _readme_table():
        assert parse_error(" ".join(words)) is None, words
