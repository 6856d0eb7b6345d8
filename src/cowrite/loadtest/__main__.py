"""``python -m cowrite.loadtest``: the same command as ``cowrite loadtest``."""

from cowrite.loadtest.cli import loadtest_command

if __name__ == "__main__":
    loadtest_command()(prog_name="cowrite loadtest")
