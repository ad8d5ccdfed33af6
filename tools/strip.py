"""Same seeds through several exports, one row each:
``python tools/strip.py "teacher=WD@1000" "student=WD2@4" --out strip.png``."""
from diffengine_distill.apis.sample import strip_main

if __name__ == "__main__":
    strip_main()
