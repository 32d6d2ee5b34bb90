"""One exception type for problems the user can fix (bad paths, files, settings).

Scripts catch it at the top level and print its message as a single line instead of a traceback.
"""


class CrossFuseError(Exception):
    """A user-facing error whose message names the offending file or setting."""
