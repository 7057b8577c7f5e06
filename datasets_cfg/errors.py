"""The one exception type the data layer raises for bad user input.

Every message names the file (or YAML key) at fault and says what to do, so that command lines can print it
as-is instead of a traceback.
"""


class DatasetError(ValueError):
    """A dataset file, folder or YAML that cannot be used as it is."""

    def __init__(self, message: str, path=None):
        self.path = None if path is None else str(path)
        super().__init__(f"{self.path}: {message}" if self.path else message)
