# reportupdater: a scheduled report runner. See README.md and docs/.
__version__ = "0.1.0"
