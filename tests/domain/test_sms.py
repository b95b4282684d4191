"""SMS replies: what citizens really send, read as stars, and nothing read that was not written."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from haochaping.domain.sms import MAX_TEXT, parse_reply


@pytest.mark.parametrize(
    ("reply", "stars", "text"),
    [
        ("5", 5, None),
        ("1", 1, None),
        ("５", 5, None),
        ("　３　", 3, None),
        ("【4】", 4, None),
        ("5分", 5, None),
        ("3星", 3, None),
        ("五星", 5, None),
        ("五", 5, None),
        ("非常满意", 5, None),
        ("满意", 4, None),
        ("基本满意", 3, None),
        ("不满意", 2, None),
        ("非常不满意", 1, None),
        ("很满意", 5, None),
        ("很不满意", 1, None),
        ("不太满意", 2, None),
        ("一般", 3, None),
        ("还行", 3, None),
        ("滿意", 4, None),
        ("非常滿意", 5, None),
        ("太差了", 1, "了"),
        ("2 等了两个小时", 2, "等了两个小时"),
        ("２，等了两个小时", 2, "等了两个小时"),
        ("不满意，等了两个小时", 2, "等了两个小时"),
        ("非常满意！谢谢小王", 5, "谢谢小王"),
    ],
)
def test_levels_people_send_are_read(reply: str, stars: int, text: str | None) -> None:
    result = parse_reply(reply)
    assert (result.stars, result.text, result.reason) == (stars, text, None)


@pytest.mark.parametrize(
    ("reply", "reason_part"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("窗口的人态度很好", "no level found"),
        ("两个小时才办完", "no level found"),
        ("10", "'10', not a level"),
        ("0", "'0', not a level"),
        ("6 很好", "'6', not a level"),
        ("12345", "not a level"),
    ],
)
def test_replies_without_a_level_keep_the_words_and_say_why(reply: str, reason_part: str) -> None:
    result = parse_reply(reply)
    assert result.stars is None
    assert result.reason is not None and reason_part in result.reason
    if reply.strip():
        assert result.text == reply.strip()


def test_very_dissatisfied_is_not_read_as_satisfied() -> None:
    assert parse_reply("非常不满意").stars == 1
    assert parse_reply("不满意").stars == 2


@given(st.text(max_size=300))
def test_any_reply_gives_a_result_never_an_error(reply: str) -> None:
    result = parse_reply(reply)
    assert result.stars in (None, 1, 2, 3, 4, 5)
    assert (result.stars is None) == (result.reason is not None)
    assert result.text is None or 0 < len(result.text) <= MAX_TEXT


@given(st.integers(1, 5), st.sampled_from(["", " ", "，", "。", " 谢谢", "分", "星"]))
def test_a_digit_with_or_without_words_gives_its_stars(stars: int, suffix: str) -> None:
    assert parse_reply(f"{stars}{suffix}").stars == stars
    full_width = chr(ord("０") + stars)
    assert parse_reply(f"{full_width}{suffix}").stars == stars


# Characters that start no level word and no numeral: a reply made of them names no level.
_PLAIN = "窗口态度办事人员等了小时谢谢的我们请问怎么这个工作效率服务热情"


@given(st.text(alphabet=_PLAIN + " ，。", min_size=1, max_size=40))
def test_words_alone_are_kept_without_a_guessed_level(words: str) -> None:
    result = parse_reply(words)
    assert result.stars is None
    assert result.reason is not None
