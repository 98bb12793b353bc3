"""Plain FastAPI: one `async def` operation returning the bare peers' JSON, served like the app:

gunicorn -k uvicorn_worker.UvicornWorker -w 2 --chdir bench/peers fastapi_plain:app
"""

from fastapi import FastAPI

BODY = {"status": "ok", "version": "1.0.0"}

app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)


@app.get("/api/health")
async def health() -> dict:
    return BODY
