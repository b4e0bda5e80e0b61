"""Alembic migrations of the job store (``jobs/schema.py`` runs them; ``alembic.ini`` at the repo root
points here for ``alembic revision --autogenerate``). Shipped inside the package so an installed
service can upgrade its database."""
