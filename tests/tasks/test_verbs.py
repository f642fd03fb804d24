"""The verb table is the one list of commands: the check-run buttons, the help text and the
comment parser all derive from it."""

from __future__ import annotations

from bot import commands, messages
from bot.tasks import verbs


def test_the_check_run_buttons_are_the_table_s_button_verbs() -> None:
    assert {v.name for v in verbs.TASK_VERBS if v.button} == {messages.ACTION_RETRY, messages.ACTION_STOP}


def test_every_named_verb_has_one_help_line_and_the_help_lists_no_other() -> None:
    assert set(messages.COMMAND_HELP) - {commands.FEEDBACK} == set(verbs.NAMES)
    assert set(verbs.NAMES) <= set(commands.VERBS)


def test_a_reply_verb_is_not_a_task_verb() -> None:
    assert all(verbs.verb(name) is None for name in verbs.REPLY_VERBS)
    assert [verbs.verb(v.name) for v in verbs.TASK_VERBS] == list(verbs.TASK_VERBS)
