"""The HTTP side of the service: the FastAPI app, middlewares, schemas, errors and routes."""
