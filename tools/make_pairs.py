"""Teacher ODE pairs for DMD: ``python tools/make_pairs.py TEACHER --out DIR --seeds 0-9999``."""
import importlib.util
import os.path as osp
import runpy

if __name__ == "__main__":
    # Parse with the standard-library parser first (read by path: importing the
    # package would load torch), so --help and bad numbers answer at once.
    package = importlib.util.find_spec("diffengine_distill").submodule_search_locations[0]
    runpy.run_path(osp.join(package, "apis", "cli.py"))["pairs_parser"]().parse_args()
    from diffengine_distill.apis.pairs import main
    main()
