from kogpt.cli.main import main

raise SystemExit(main())
