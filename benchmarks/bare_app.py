"""The baseline of the serving load test: a bare FastAPI app answering a fixed 10-item JSON
(same uvicorn options as the service), so "what our stack costs" is a ratio measured in the
same run. ``uvicorn benchmarks.bare_app:app``."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

ITEMS = [
    {
        "rank": i,
        "artist_id": f"a{i}",
        "name": f"Artist {i}",
        "score": 0.5,
        "source": "model",
        "reason": "because you listen to Artist 0",
    }
    for i in range(1, 11)
]
app = FastAPI()


@app.get("/v1/users/{user_id}/recommendations")
async def recommendations(user_id: str, k: int = 10) -> dict[str, Any]:
    return {"user_id": user_id, "request_id": "0" * 32, "items": ITEMS[:k]}
