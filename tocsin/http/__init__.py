"""The inbox over HTTP (SPEC 12.2): `create_app` and `issue_token`. Needs the `http` extra (FastAPI)."""

from tocsin.http.app import create_app
from tocsin.http.tokens import InvalidToken, issue_token, verify_token

__all__ = ["InvalidToken", "create_app", "issue_token", "verify_token"]
