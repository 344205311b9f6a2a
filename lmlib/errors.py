"""Errors that lmlib shows to its user.

Every mistake the user can fix (a bad path, a malformed file, an impossible
setting) raises ``LmlibError`` with a one-line message that says what to fix.
The CLI turns it into exit code 2 instead of a traceback. Bugs in lmlib itself
raise ordinary exceptions.
"""


class LmlibError(ValueError):
    """Bad input or state the user can fix. The message is one line that says what to fix."""


class UnknownSymbolError(LmlibError):
    """A character or word that is not in the tokenizer's vocabulary."""

    def __init__(self, message: str, symbol: str = "", position: int = -1) -> None:
        super().__init__(message)
        self.symbol = symbol  # the offending character or word
        self.position = position  # where it starts, in characters of the encoded text
