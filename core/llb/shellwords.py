"""Split a command line into words like the Go client's ``llb.Shlex`` (google/shlex).

Differences from Python's ``shlex.split``: ``#`` starts a comment only at the start of a word
(up to the end of the line), and inside double quotes a backslash escapes any character.
"""

from __future__ import annotations

from bkcore.errors import DefinitionError

_SPACE = " \t\r\n"


def split(text: str) -> list[str]:
    """Words of ``text``; raises DefinitionError on an unclosed quote or trailing escape."""
    words: list[str] = []
    word: list[str] = []
    in_word = False
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if not in_word:
            if c in _SPACE:
                i += 1
                continue
            if c == "#":
                end = text.find("\n", i)
                i = n if end < 0 else end + 1
                continue
            in_word = True
        if c in _SPACE:
            words.append("".join(word))
            word, in_word = [], False
        elif c == "\\":
            if i + 1 >= n:
                raise DefinitionError(f"command {text!r}: escape at end of input")
            word.append(text[i + 1])
            i += 1
        elif c == "'":
            end = text.find("'", i + 1)
            if end < 0:
                raise DefinitionError(f"command {text!r}: unclosed single quote")
            word.append(text[i + 1 : end])
            i = end
        elif c == '"':
            i += 1
            while True:
                if i >= n:
                    raise DefinitionError(f"command {text!r}: unclosed double quote")
                q = text[i]
                if q == '"':
                    break
                if q == "\\":
                    if i + 1 >= n:
                        raise DefinitionError(f"command {text!r}: unclosed double quote")
                    i += 1
                    q = text[i]
                word.append(q)
                i += 1
        else:
            word.append(c)
        i += 1
    if in_word:
        words.append("".join(word))
    return words
