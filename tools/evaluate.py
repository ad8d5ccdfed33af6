"""Score exports: ``python tools/evaluate.py WORK_DIR --steps 1000 250 50 10``.

Writes evaluation.json / evaluation.md (``--out``); see
``diffengine_distill.apis.evaluate`` for the metrics.
"""
from diffengine_distill.apis.evaluate import main

if __name__ == "__main__":
    main()
