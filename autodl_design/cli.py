"""Runs an entry point's ``main`` with absl and this project's exit codes (2 = bad input).

Every entry point (main.py, simple_main.py, dataset_maker.py, ``python -m
trainer``, ``python -m trainer.profile``, ``python -m
autodl_design.search.report``) ends with ``cli.run(main)`` instead of
``absl.app.run(main)``. absl exits 1 on a flag error (after a
"FATAL Flags parsing error" line and a hint) and on ``--help``; here:

* a flag error (unknown flag, bad or out-of-range value, failed validator,
  also in a ``--flagfile``) or an ``app.UsageError`` raised by ``main``
  prints one line ``error: ...`` on stderr and exits 2;
* ``--help``, ``--helpshort``, ``--helpfull`` and ``--helpxml`` print the help
  and exit 0;
* Ctrl-C that ``main`` does not handle prints ``interrupted`` and exits 130;
* whatever ``main`` returns is the exit code, as with ``absl.app.run``.

This module reads no flag values; it imports only absl.
"""
import sys
from typing import Callable, List, NoReturn, Optional

from absl import app
from absl import flags as absl_flags

BAD_INPUT = 2
INTERRUPTED = 130


def error_line(message) -> str:
    """``message`` (an exception or text, maybe several lines) as one ``error: ...`` line."""
    lines = [" ".join(line.split()) for line in str(message).splitlines()]
    return "error: %s" % "; ".join(line for line in lines if line)


def refuse(message) -> NoReturn:
    """Prints ``error: MESSAGE`` as one line on stderr and exits with code 2."""
    print(error_line(message), file=sys.stderr)
    sys.exit(BAD_INPUT)


def _flag_error_message(error: absl_flags.Error) -> str:
    message = str(error)
    if isinstance(error, absl_flags.UnrecognizedFlagError):
        message += " (--helpfull lists every flag)"
    return message


def _parse_flags(argv: List[str]) -> List[str]:
    """absl's flag parsing, with a flag error refused (exit 2) and help exiting 0."""
    try:
        return absl_flags.FLAGS(argv)
    except absl_flags.Error as e:
        refuse(_flag_error_message(e))
    except SystemExit as e:
        # While flags are parsed, only absl's help flags exit, with code 1
        # after printing the help; asking for help is not a failure.
        if e.code == 1:
            sys.exit(0)
        raise


def run(main: Callable[[List[str]], Optional[int]], argv: Optional[List[str]] = None) -> NoReturn:
    """``absl.app.run(main)`` with the exit codes of the module docstring.

    Args:
      main: the entry point's ``main(argv)``; argv holds the program name and
        the arguments left after the flags. Its return value is the exit code
        (None = 0).
      argv: the command line (default: sys.argv).
    """
    def guarded(args: List[str]) -> Optional[int]:
        try:
            return main(args)
        except app.UsageError as e:
            refuse(e)
        except absl_flags.Error as e:
            refuse(_flag_error_message(e))
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(INTERRUPTED)

    app.run(guarded, argv=argv, flags_parser=_parse_flags)
