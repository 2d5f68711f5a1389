"""gateway: takes accounting documents in by mail or folder and delivers them to packages."""

__version__ = "0.1.0"
