"""Sample an export: ``python tools/sample.py WORK_DIR_OR_EXPORT --steps 4 --seeds 0-99``."""
from diffengine_distill.apis.sample import main

if __name__ == "__main__":
    main()
