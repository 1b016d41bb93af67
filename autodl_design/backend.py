"""The one place that imports Paddle and PARL for the rest of the project.

PARL 2.2.1 picks its backend on import and looks for the removed
``paddle.fluid`` unless ``PARL_BACKEND=paddle`` is set first; Paddle 3.x warns
about a missing ccache on import. Import ``paddle`` and ``parl`` from here::

    from autodl_design.backend import paddle, parl

``parl`` is imported on first use only: importing PARL starts a
multiprocessing Manager and a child process (its framework check), which the
trainer workers, who only need Paddle, should not pay for.
"""
import importlib
import logging
import os
import warnings

os.environ.setdefault("PARL_BACKEND", "paddle")
if os.environ["PARL_BACKEND"] != "paddle":
    raise ImportError(
        "PARL_BACKEND=%r: autodl-design needs PARL_BACKEND=paddle (unset it or set it to paddle)"
        % os.environ["PARL_BACKEND"])

# Paddle's C++ side logs INFO/WARNING lines through glog (e.g. "New Executor
# is Running" when exporting); keep errors only unless the user asked otherwise.
os.environ.setdefault("GLOG_minloglevel", "2")
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="No ccache found")
    import paddle  # noqa: E402


def _import_parl():
    # On import PARL logs INFO lines (the backend switch, the program's argv);
    # its logger object is the one named "PARL", so a filter added before the
    # import keeps its warnings and errors and drops the INFO chatter.
    logging.getLogger("PARL").addFilter(lambda record: record.levelno >= logging.WARNING)
    return importlib.import_module("parl")


def __getattr__(name):
    if name == "parl":
        module = _import_parl()
        globals()["parl"] = module
        return module
    raise AttributeError("module %r has no attribute %r" % (__name__, name))


def check_installation():
    """Raises RuntimeError naming what is broken in the Paddle/PARL install."""
    major = int(paddle.__version__.split(".")[0])
    if major < 3:
        raise RuntimeError(
            "paddlepaddle %s is installed; autodl-design needs Paddle 3.x "
            "(2.6.2 crashes in zlib on Debian 12, Paddle #70538): run setup.sh" % paddle.__version__)
    parl = __getattr__("parl")
    if parl.__version__ != "2.2.1":
        raise RuntimeError("parl %s is installed; autodl-design is tested with 2.2.1: run setup.sh"
                           % parl.__version__)
    for name in ("Model", "Algorithm", "Agent"):
        if not hasattr(parl, name):
            raise RuntimeError("parl.%s is missing: PARL did not load its paddle backend" % name)


__all__ = ["paddle", "parl", "check_installation"]
