"""The read-only results dashboard (`pmemlab serve`): FastAPI + Jinja2, server-rendered, no JavaScript."""
