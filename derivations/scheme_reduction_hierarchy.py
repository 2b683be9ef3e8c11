import pathlib, sys; sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # this checkout's ufm
from ufm.theory.derivations import main
sys.exit(main("scheme_reduction_hierarchy"))
