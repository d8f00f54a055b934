"""A WSGI app for the gunicorn tests: answers with the PID of the worker that served it."""
import os


def app(environ, start_response):
    body = f'{{"worker":{os.getpid()},"path":"{environ.get("PATH_INFO", "")}"}}'.encode()
    status = "200 OK" if environ.get("PATH_INFO") != "/error" else "500 Internal Server Error"
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
