#!/usr/bin/env python3
"""fastnn's version, in one place: the package reads it, and the build runs this file."""
__version__ = "0.1.0"

if __name__ == "__main__":
    print(__version__)
