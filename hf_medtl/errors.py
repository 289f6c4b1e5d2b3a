"""The one exception type the CLI turns into a one-line message instead of a traceback."""


class HfMedtlError(Exception):
    """A problem with the user's input (recipe, data, checkpoint) that names what to fix."""
