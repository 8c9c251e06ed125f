"""`python -m pipeline.cli.main`: the `sulphur` command."""

from pipeline.cli.main.main import main

raise SystemExit(main())
