"""Settings of the examples/pipelines Django project: just enough to run migrations.

The connection comes from libpq's own variables (PGHOST, PGPORT, PGUSER, PGDATABASE;
passwords from PGPASSWORD or ~/.pgpass), like ledgeradmin's.
"""

import os

SECRET_KEY = "examples-pipelines-not-secret"
INSTALLED_APPS = ["shop"]
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.get("PGDATABASE", "shop"),
        "HOST": os.environ.get("PGHOST", ""),
        "PORT": os.environ.get("PGPORT", ""),
        "USER": os.environ.get("PGUSER", ""),
    }
}
