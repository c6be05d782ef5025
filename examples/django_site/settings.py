"""Django settings: the part to copy is ``LOGGING``.

Django passes ``LOGGING`` to ``logging.config.dictConfig`` when it starts (after its own
defaults), so ExHTTPHandler is configured like any other handler. On the root logger it receives
what ``django.request`` logs for every 500 — with the traceback — and what your own code logs.

    python examples/logy_sink.py --port 5000                   # in another terminal
    cd examples && DJANGO_SETTINGS_MODULE=django_site.settings gunicorn django_site.wsgi

At exit (the end of a management command, a gunicorn worker stopping) ``logging.shutdown()``
delivers what is still queued, within ``shutdown_timeout``.
"""

import os

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "only-for-this-example")
DEBUG = False
ALLOWED_HOSTS = ["localhost", "127.0.0.1"]
ROOT_URLCONF = "django_site.urls"
INSTALLED_APPS: list = []
MIDDLEWARE: list = []
USE_TZ = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,  # keep Django's own loggers working
    "handlers": {
        "central": {
            "class": "ex_loghandlers.ExHTTPHandler",
            # /sink/<api_key>/<app_name>: the records arrive with _ex_app = "mysite"
            "url": os.environ.get("LOG_URL", "http://localhost:5000/sink/TEST/mysite"),
            "level": "INFO",
        },
    },
    "root": {"handlers": ["central"], "level": "INFO"},
}
