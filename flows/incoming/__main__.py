"""`python -m flows.incoming`: the new-data flow's command line (see flows.incoming.flow)."""

import sys

from flows.incoming.flow import main

sys.exit(main())
