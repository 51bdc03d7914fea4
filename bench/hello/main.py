"""The framework floor: a bare functions-framework function, served like the real ones.

``functions-framework --source bench/hello/main.py --target hello``
"""

from __future__ import annotations

import functions_framework
from flask import Request


@functions_framework.http
def hello(request: Request) -> str:
    return "hello"
