"""The one exception type for mistakes a user can make; the CLI turns it into one line and exit 2."""

from __future__ import annotations

import re

# Command-line flags whose Python argument has another name; the rest are the flag with '_' for '-'.
ARGUMENT_OF_FLAG = {"--data": "data_dir", "--json": "as_json", "--space-file": "space_files", "--no-reference": "reference", "--no-refit": "refit"}
_FLAG = re.compile(r"(?<![\w-])--([a-z][a-z0-9-]*)")


def argument_of_flag(flag: str) -> str:
    """'--trial-timeout' -> 'trial_timeout', '--data' -> 'data_dir': the Python argument behind a flag."""
    return ARGUMENT_OF_FLAG.get(flag, flag.removeprefix("--").replace("-", "_"))


class UserError(Exception):
    """A problem with the user's input (an option, a file, a URL, a study name), in one line.

    Messages are written naming options as the command line spells them (`--storage`): the CLI
    prints `cli_message`, while str() names the Python API's argument instead (`storage`).
    """

    def __init__(self, message: object) -> None:
        self.cli_message = " ".join(str(message).split())
        # `quoted` text is a command to type (`ray start --head`): its flags stay as they are
        parts = self.cli_message.split("`")
        parts[::2] = [_FLAG.sub(lambda match: argument_of_flag(match.group(0)), part) for part in parts[::2]]
        super().__init__("`".join(parts))
