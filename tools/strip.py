"""Same seeds through several pipelines, one row each:
``python tools/strip.py "teacher=WD@1000" "student=WD2@4" --out strip.png``."""
import importlib.util
import os.path as osp
import runpy

if __name__ == "__main__":
    # Parse with the standard-library parser first (read by path: importing the
    # package would load torch), so --help and bad numbers answer at once.
    package = importlib.util.find_spec("diffengine_distill").submodule_search_locations[0]
    runpy.run_path(osp.join(package, "apis", "cli.py"))["strip_parser"]().parse_args()
    from diffengine_distill.apis.sample import strip_main
    strip_main()
