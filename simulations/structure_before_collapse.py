"""Structure before collapse — the same job as `ufm run`, as a script.

    python simulations/structure_before_collapse.py [CONFIG.toml] [--out DIR]

The configuration beside this file is the default one; edit a copy to change the settings,
λ, β, widths or times. All logic lives in ufm.experiments.structure_before_collapse.
"""

import os
import sys

from ufm.cli import main

if __name__ == "__main__":
    args = sys.argv[1:]
    if not args or args[0].startswith("-"):
        args = [os.path.join(os.path.dirname(os.path.abspath(__file__)), "structure_before_collapse.toml"), *args]
    sys.exit(main(["run", *args]))
