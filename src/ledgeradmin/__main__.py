"""`python -m ledgeradmin`: the same as the `ledgeradmin` command."""

from ledgeradmin.cli import main

if __name__ == "__main__":
    main()
