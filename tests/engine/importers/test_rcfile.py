"""The fetchmailrc lexer and grammar: fetchmail's own quirks, and no crash on any input."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from postbridge.engine.importers.rcfile import parse_rcfile
from postbridge.engine.importers.rclexer import Stray, tokenize


def texts(source: str) -> list[tuple[str, str]]:
    return [(t.kind, t.text) for t in tokenize(source)]


def test_noise_words_and_punctuation_are_dropped() -> None:
    assert texts("poll a with proto pop3; user b, and options: ssl") == [
        ("keyword", "poll"),
        ("string", "a"),
        ("keyword", "protocol"),
        ("keyword", "pop3"),
        ("keyword", "user"),
        ("string", "b"),
        ("keyword", "ssl"),
    ]


def test_comment_starts_only_where_a_token_starts() -> None:
    assert texts("password abc#def # a comment\nkeep") == [
        ("keyword", "password"),
        ("string", "abc#def"),
        ("keyword", "keep"),
    ]


def test_after_user_and_password_a_keyword_is_a_name() -> None:
    assert texts("user keep password ssl is poll here") == [
        ("keyword", "user"),
        ("string", "keep"),
        ("keyword", "password"),
        ("string", "ssl"),
        ("keyword", "is"),
        ("string", "poll"),
        ("keyword", "here"),
    ]


def test_quoted_strings_decode_c_escapes() -> None:
    tokens = tokenize(r'"a\tb\x41\101\\" ' + "'x y'")
    assert [t.text for t in tokens] == ["a\tbAe\\", "x y"]


def test_longest_match_keeps_adjacent_quotes_in_one_bare_word() -> None:
    # fetchmail (flex) takes 'it''s' as one word, quotes included: longer than 'it'.
    assert texts("password 'it''s'") == [("keyword", "password"), ("string", "'it''s'")]


def test_joined_no_and_aliases() -> None:
    assert texts("nokeep username x pass y proto POP3 local a.example") == [
        ("keyword", "no"),
        ("keyword", "keep"),
        ("keyword", "user"),
        ("string", "x"),
        ("keyword", "password"),
        ("string", "y"),
        ("keyword", "protocol"),
        ("keyword", "pop3"),
        ("keyword", "localdomains"),
        ("string", "a.example"),
    ]


def test_line_numbers_follow_multiline_strings() -> None:
    tokens = tokenize('poll a\n  password "two\nlines" keep\nssl')
    assert [(t.text, t.line) for t in tokens][-3:] == [("two\nlines", 2), ("keep", 3), ("ssl", 4)]


def test_unclosed_quote_is_reported() -> None:
    problems: list[Stray] = []
    tokenize('poll a password "oops\n', problems=problems)
    assert problems == [Stray(1, 'a " quote that is never closed')]


def test_user_here_is_remote_there() -> None:
    rc = parse_rcfile('poll s user quinn here is "q.remote" there password p')
    (user,) = rc.entries[0].users
    assert user.remote == "q.remote"
    assert user.localnames == [("quinn", None)]


def test_mappings_and_wildcard() -> None:
    rc = parse_rcfile("poll s user office is alice bill = wilma * here")
    (user,) = rc.entries[0].users
    assert user.localnames == [("alice", None), ("bill", "wilma")]
    assert user.wildcard


def test_user_options_without_user_make_an_implicit_user() -> None:
    rc = parse_rcfile("poll s proto pop3 password secret ssl")
    (user,) = rc.entries[0].users
    assert user.remote is None
    assert user.options["password"].value == "secret"
    assert user.options["ssl"].value is True


def test_set_statements_and_negation() -> None:
    rc = parse_rcfile("set daemon 300\nset no bouncemail\nset postmaster = 'pm'")
    assert rc.settings["daemon"].value == "300"
    assert rc.settings["bouncemail"].value is False
    assert rc.settings["postmaster"].value == "pm"


def test_words_out_of_place_become_strays_and_parsing_goes_on() -> None:
    rc = parse_rcfile("bogus\npoll s wibble user u password p\npoll t user v")
    assert [s.line for s in rc.strays] == [1, 2]
    assert [e.name for e in rc.entries] == ["s", "t"]
    assert rc.entries[0].users[0].options["password"].value == "p"


@given(st.text(alphabet=st.sampled_from(list("poll user is here =*'\"#\\;\n ab1xkeepssl"))))
def test_any_text_parses_without_raising(text: str) -> None:
    parse_rcfile(text)


@given(st.text())
def test_arbitrary_unicode_parses_without_raising(text: str) -> None:
    parse_rcfile(text)
