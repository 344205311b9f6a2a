import sys

from lmlib.cli import main

sys.exit(main())
