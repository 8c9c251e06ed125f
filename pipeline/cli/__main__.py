"""`python -m pipeline.cli`: the `sulphur` command."""

from pipeline.cli.main.main import main

raise SystemExit(main())
