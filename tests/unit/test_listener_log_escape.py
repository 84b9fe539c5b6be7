"""What the listener logs of a request is escaped: no line break, escape sequence or other control character
of it reaches the log, and printable text is left as it is."""
from hypothesis import given, settings, strategies as st

from service.view.app import _loggable


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_logged_request_text_is_one_printable_line(text):
    logged = _loggable(text)
    assert logged.isprintable() and len(logged.splitlines()) <= 1


@given(st.text(st.characters(codec="utf-8", categories=["L", "N", "P", "S"], include_characters=" ",
                             exclude_characters="\\")))
def test_printable_text_is_logged_as_it_is(text):
    assert _loggable(text) == text


def test_a_forged_line_and_terminal_escapes_stay_on_the_line_and_visible():
    assert _loggable("/x\nINFO irisflow.daemon: ok\x1b[2J\\") == "/x\\nINFO irisflow.daemon: ok\\x1b[2J\\\\"
