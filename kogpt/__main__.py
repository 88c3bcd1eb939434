from kogpt.cli import main

raise SystemExit(main())
