# `python -m reportupdater` is the same as the `reportupdater` command.
from .cli import main

raise SystemExit(main())
