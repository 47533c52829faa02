from operator_ai.ratelimiter.cli import main

raise SystemExit(main())
