import sys

from genprof.cli.main import main

sys.exit(main())
