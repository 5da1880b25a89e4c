"""`rememr1 serve`: any model rememr1 runs, as an OpenAI-compatible chat endpoint that
answers questions over documents of any length (`app.py`; the wire format in `schema.py`).

    rememr1 serve                                   # built-in model, http://127.0.0.1:8000/v1
    from rememr1.serve import create_app, ServeSettings
    app = create_app({"rememr1": agent}, ServeSettings(api_key="k"))   # any ASGI server runs it
"""

from .app import ApiError, ServeSettings, check_bind, create_app, run_server

__all__ = ["ApiError", "ServeSettings", "check_bind", "create_app", "run_server"]
