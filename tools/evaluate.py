"""Score pipelines: ``python tools/evaluate.py teacher=WORK_DIR@1000,50 student=EXPORT@4``.

Writes evaluation.json / evaluation.md (``--out``); see docs/evaluation.md and
``diffengine_distill.apis.evaluate`` for the metrics.
"""
import importlib.util
import os.path as osp
import runpy

if __name__ == "__main__":
    # Parse with the standard-library parser first (read by path: importing the
    # package would load torch), so --help and bad numbers answer at once.
    package = importlib.util.find_spec("diffengine_distill").submodule_search_locations[0]
    runpy.run_path(osp.join(package, "apis", "cli.py"))["evaluate_parser"]().parse_args()
    from diffengine_distill.apis.evaluate import main
    main()
