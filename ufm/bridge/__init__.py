"""``ufm.bridge``: real training runs in, UFM predictions out (docs/exchange-format.md).

* :func:`load` reads an exported run (npz, safetensors with a pure-numpy reader, HDF5, a
  directory of per-checkpoint files, or the NTP-UFM authors' stacked ``W_list_*.npy`` layout)
  into a :class:`Run`; :func:`export` and :class:`CheckpointWriter` write the format from any
  array-likes. Nothing here imports torch.
* :meth:`Run.trajectory` turns a run into a :class:`ufm.Trajectory` (Grams, logits, problem),
  so the core's metrics and plots apply to real and simulated runs alike; runs may be
  Gram-only (``gram_H``, optional ``gram_W``, ``logits`` instead of H and W), and what needs
  the features raises :class:`FeaturesRequired`.
* :meth:`Run.verdict` says what the run did — early ``inherited`` / ``amplified`` / ``none``,
  late ``collapse`` / ``persistent`` / ``low_rank`` / ``degenerate`` — with the numbers
  behind it (:mod:`ufm.bridge.verdict`).
* :func:`fit` / :class:`Fit` fit UFM parameters to a run's observables by least squares;
  :func:`compare` fits the standard, coupled and linear-features families side by side,
  against a frozen-initial-state baseline, with oracle rows apart and no best model when none
  beats the baseline;
  :func:`kernel_prediction` predicts the run from its logged feature kernel with only the time
  scale fitted.

Convention at this boundary: in a run **rows are samples** (``H`` is (T, N, d)), while the
core keeps features as d×N columns; the bridge converts, and says so where it matters.
"""

from .errors import FeaturesRequired, FormatError
from .writers import CheckpointWriter, export
from .format import FORMAT, VERSION
from .loaders import detect, load
from .run import Run

__all__ = ["load", "export", "detect", "CheckpointWriter", "Run", "FormatError", "FeaturesRequired", "FORMAT",
           "VERSION"]
from .fitting import Fit, fit  # noqa: E402

__all__ += ["Fit", "fit"]
from .comparison import Comparison, KernelPrediction, compare, kernel_prediction  # noqa: E402

__all__ += ["compare", "Comparison", "kernel_prediction", "KernelPrediction"]
from .verdict import Verdict  # noqa: E402

__all__ += ["Verdict"]
