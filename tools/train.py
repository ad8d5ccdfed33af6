"""Train or distil: ``python tools/train.py CONFIG [--resume] [--work-dir DIR] ...``

``mim train diffengine_distill CONFIG`` runs this file; the logic lives in
``diffengine_distill.apis.train`` so editable and wheel installs agree.
"""
from diffengine_distill.apis.train import main

if __name__ == "__main__":
    main()
