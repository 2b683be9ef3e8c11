"""The bridge's exception: every problem with an exported run is a :class:`FormatError`."""

from __future__ import annotations

__all__ = ["FormatError", "FeaturesRequired"]


class FormatError(ValueError):
    """An exported run could not be read, or its contents break the "ufm-run" format.

    The message always names the file (or argument), and where it applies the key, the
    checkpoint and what was expected against what was found. It subclasses ``ValueError`` so
    that ``except ValueError`` keeps working.

    Attributes:
        source: the file or directory being read ("<arrays>" for in-memory input), or None.
        key: the array or metadata key at fault, or None.
        checkpoint: the index of the checkpoint at fault (into ``steps``), or None.
    """

    def __init__(self, message: str, *, source: str | None = None, key: str | None = None,
                 checkpoint: int | None = None):
        super().__init__(message)
        self.source = source
        self.key = key
        self.checkpoint = checkpoint


class FeaturesRequired(ValueError):
    """An operation needs the features H and W of a run, and the run is Gram-only (it logged
    ``gram_H`` — and possibly ``gram_W`` and ``logits`` — instead). The message names the
    operation and what the Grams do give."""
