from p1logger.cli import main

raise SystemExit(main())
