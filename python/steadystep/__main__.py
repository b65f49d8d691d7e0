"""``python -m steadystep --version``."""

import argparse

import steadystep


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m steadystep", description=steadystep.__doc__)
    parser.add_argument("--version", action="version", version=f"steadystep {steadystep.__version__}")
    parser.parse_args()
    parser.print_help()


if __name__ == "__main__":
    main()
