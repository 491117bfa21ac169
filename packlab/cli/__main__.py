"""``python -m packlab.cli``: the ``packlab`` command."""

from . import main

if __name__ == "__main__":  # Dask's worker processes import this module again
    main()
