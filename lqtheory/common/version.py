"""The package version, in the common room so that any layer can record it (run metadata) without
importing the package root (which imports every room)."""

VERSION = "0.1.0"
