import sys

from tabes.cli import main

sys.exit(main())
