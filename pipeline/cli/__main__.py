"""`python -m pipeline.cli`: the `sulphur` command."""

from pipeline.cli.main import main

raise SystemExit(main())
