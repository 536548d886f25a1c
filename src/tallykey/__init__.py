"""tallykey: named, expiring API tokens, verified in microseconds.

The embedded, in-process API:

    from tallykey import Verifier, TallykeyMiddleware, TallykeyAuth, Verdict
"""

from tallykey.auth.middleware import TallykeyAuth, TallykeyMiddleware
from tallykey.auth.verdict import Verdict
from tallykey.auth.verifier import Verifier

__all__ = ["TallykeyAuth", "TallykeyMiddleware", "Verdict", "Verifier"]
