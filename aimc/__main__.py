import sys

from .cli import main

if __name__ == "__main__":  # guarded: worker processes started with "spawn" (Dask) re-import this module
    sys.exit(main())
