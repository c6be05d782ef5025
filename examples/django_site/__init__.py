"""A minimal Django project whose errors reach the central log server: see settings.LOGGING."""
