"""The one exception type for mistakes a user can make; the CLI turns it into one line and exit 2."""


class UserError(Exception):
    """A problem with the user's input (an option, a URL, a study name); str() is one line."""
