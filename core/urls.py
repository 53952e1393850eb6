"""URLs made safe to print: the one place that hides credentials in a connection URL."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

_SECRET_QUERY = re.compile(r"((?:^|&)(?:password|passwd|pass|secret|token)=)[^&]*", re.IGNORECASE)


def redact_url(url: str) -> str:
    """``url`` with any password (``user:PASSWORD@host`` or ``?password=...``) replaced by
    ``***``; safe for logs and error messages. Anything that is not a URL comes back as is."""
    if "://" not in url:
        return url
    parts = urlsplit(url)
    netloc = parts.netloc
    userinfo, at, host = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = f"{userinfo.partition(':')[0]}:***@{host}"
    query = _SECRET_QUERY.sub(r"\1***", parts.query)
    if netloc == parts.netloc and query == parts.query:
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
