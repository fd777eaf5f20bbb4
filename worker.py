"""`python worker.py`: run a tocsin worker, exactly as `tocsin worker` does (settings from the environment).

Embedding the worker in your own process with your own channel adapters: see `tocsin.build_worker`.
"""

import sys

from tocsin.cli.app import main

if __name__ == "__main__":
    main(["worker", *sys.argv[1:]])
