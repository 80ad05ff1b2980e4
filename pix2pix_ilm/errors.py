"""The one exception type for mistakes a user can fix."""


class UsageError(Exception):
    """A problem the user can fix: a bad option, a missing folder, an undecodable image, a config mismatch.

    The CLI prints the message on one line and exits with code 2; anything else is a bug.
    """
