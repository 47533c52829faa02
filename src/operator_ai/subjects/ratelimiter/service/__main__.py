from operator_ai.subjects.ratelimiter.service.cli import main

raise SystemExit(main())
