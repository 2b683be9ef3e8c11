"""``python -m benchmarks``: run the benchmark script (same arguments as benchmarks/run.py)."""

import sys

from benchmarks.run import main

sys.exit(main())
