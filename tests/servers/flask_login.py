"""A Flask form login the way many apps write one, served by gunicorn in the login tests.

  GET  /login   the form
  POST /login   302 to / for alice / wonderland (the name trimmed and lower-cased, as many apps
                do); 400 "Invalid credentials" otherwise
  GET  /        200
"""
from flask import Flask, redirect, request

app = Flask(__name__)
USERS = {"alice": "wonderland"}


@app.get("/login")
def form():
    return (
        '<form method="post"><input name="username"><input name="password" type="password">'
        "<button>Log in</button></form>"
    )


@app.post("/login")
def login():
    user = request.form.get("username", "").strip().lower()
    if USERS.get(user) == request.form.get("password"):
        return redirect("/")
    return "Invalid credentials", 400


@app.get("/")
def home():
    return "welcome"
