"""The report command under its short name: ``python -m autodl_design.report`` (see ``__main__``)."""
