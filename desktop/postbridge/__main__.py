from __future__ import annotations

from postbridge.cli import main

raise SystemExit(main())
