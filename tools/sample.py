"""Sample a pipeline: ``python tools/sample.py EXPORT_WORK_DIR_OR_HUB_ID --steps 4 --seeds 0-99``.

See docs/evaluation.md."""
import importlib.util
import os.path as osp
import runpy

if __name__ == "__main__":
    # Parse with the standard-library parser first (read by path: importing the
    # package would load torch), so --help and bad numbers answer at once.
    package = importlib.util.find_spec("diffengine_distill").submodule_search_locations[0]
    runpy.run_path(osp.join(package, "apis", "cli.py"))["sample_parser"]().parse_args()
    from diffengine_distill.apis.sample import main
    main()
