"""`python -m migration.cli`: the qckstrt-migrate command."""

import sys

from migration.cli import main

sys.exit(main())
