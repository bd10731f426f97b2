"""The one exception type users see: the CLI prints it as a single line and exits non-zero."""


class BertTasksError(Exception):
    """A problem with the user's input (recipe, data, checkpoint, run directory).

    The message must stand on its own in one line: name the file or key, the
    row or field, and what was expected.
    """


class ConfigError(BertTasksError):
    """A recipe or override names an unknown key or gives a value of the wrong type."""


class DataError(BertTasksError):
    """A data file or Hub data set is missing, empty or has a bad row."""


class CheckpointError(BertTasksError):
    """A checkpoint cannot be found or loaded."""
