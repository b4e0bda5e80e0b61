"""How processes reach each other: Celery over Redis (tasks by name), the embedded redis-server of a
single-machine install, and promotion announcements over pub/sub. Torch-free; above core/ only."""
