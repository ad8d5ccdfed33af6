"""Teacher ODE pairs for DMD: ``python tools/make_pairs.py TEACHER --out DIR --seeds 0-9999``."""
from diffengine_distill.apis.pairs import main

if __name__ == "__main__":
    main()
