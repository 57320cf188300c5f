from gifee.cli import main

raise SystemExit(main())
