from __future__ import annotations

from authz.cli import main

main()
