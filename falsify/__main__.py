import sys

from falsify.cli.main import main

sys.exit(main())
