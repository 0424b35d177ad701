"""The programs that run inside the canary pipeline's Tekton steps.

Each module with a `main()` is one step: `python -m steps.<name> --help`.
"""

__version__ = "0.1.0"
