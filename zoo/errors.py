"""The spec error, shared by every part that checks a spec."""


class SpecError(ValueError):
    """A spec that cannot run; `errors` lists `(json_path, message)` pairs."""

    def __init__(self, errors, source=None):
        self.errors = list(errors)
        self.source = source
        where = f" in {source}" if source else ""
        lines = [f"  {path}: {message}" for path, message in self.errors]
        count = len(self.errors)
        super().__init__(
            f"{count} error{'s' if count != 1 else ''}{where}:\n" + "\n".join(lines)
        )


def json_path(parts):
    """`["stages", 0, "solver"]` as `$.stages[0].solver`."""
    return "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts)


def first_line(text, limit=200):
    """The first line of an error message, at most `limit` characters."""
    line = text.strip().splitlines()[0] if text.strip() else text
    return line if len(line) <= limit else line[:limit] + "..."
