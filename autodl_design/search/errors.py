"""The search layer's exceptions: bad user input (exit 2) versus a bug of ours (traceback)."""
from autodl_design.evaluation import WorkerSetupError

__all__ = ["SearchError", "WorkerSetupError", "WorkerBug"]


class SearchError(Exception):
    """A problem with the user's input or environment that stops the search (exit code 2).

    The message is one line naming the problem and the fix.
    """


class WorkerBug(RuntimeError):
    """An exception escaped an evaluator in a worker: a bug of the project, not the candidate's.

    The message holds the worker's traceback; the search stops and shows it.
    """
