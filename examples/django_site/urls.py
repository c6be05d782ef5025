"""One view that works and one that fails: Django answers 500 and logs the traceback."""

import logging

from django.http import HttpRequest, HttpResponse
from django.urls import path

log = logging.getLogger(__name__)


def hello(request: HttpRequest) -> HttpResponse:
    log.info("hello from %s", request.path)
    return HttpResponse("hello")


def boom(request: HttpRequest) -> HttpResponse:
    raise ZeroDivisionError("the view failed")


urlpatterns = [path("", hello), path("boom/", boom)]
