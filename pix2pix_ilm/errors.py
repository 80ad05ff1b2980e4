"""The one exception type for mistakes a user can fix."""


class UsageError(Exception):
    """A problem the user can fix: a bad option, a missing folder, an undecodable image, a config mismatch.

    The CLI prints the message on one line and exits with code 2; anything else is a bug.
    """


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (torch's are often long), or its type when it has none."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
