import sys

from voxtok.cli import main

sys.exit(main())
